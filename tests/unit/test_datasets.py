"""Data sets for nodes and the server: bundled sets offline, CSV files with clear errors, disjoint shares,
the three feature scalings (global from federated statistics, node-local, fixed range), and runnode's data options."""

import numpy as np
import pytest

from aggregation.datasets import (
    BUILTIN,
    DataError,
    _holdout_split,
    csv_load,
    dataset_load,
    dataset_pool,
    node_data_load,
    node_data_scale,
    node_feature_stats,
    nodes_data_load,
    server_testset_load,
)
from aggregation.fl.features import feature_stats_combine
from nodes_app.management.commands import runnode

SHAPES = {"digits": (1797, 64, 10), "breast_cancer": (569, 30, 2), "wine": (178, 13, 3), "iris": (150, 4, 3),
          "diabetes": (442, 10, 0)}


def write_csv(path, text: str):
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_bundled_set_loads_offline_with_its_shape_and_task(name):
    # Execute
    ds = dataset_load(name)

    # Assert
    rows, features, classes = SHAPES[name]
    assert ds.x.shape == (rows, features) and ds.y.shape == (rows,)
    assert ds.classes == classes and ds.task == ("regression" if name == "diabetes" else "classification")


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer"])
def test_bundled_sets_read_without_scikit_learn_equal_its_loaders(name):
    # Prepare
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, BUILTIN[name][0])()

    # Execute
    ds = dataset_load(name)

    # Assert: bit for bit what scikit-learn's loader gives
    np.testing.assert_array_equal(ds.x, bunch.data)
    np.testing.assert_array_equal(ds.y, bunch.target)


def test_the_server_test_rows_are_never_in_a_node_partition():
    # Prepare
    full = dataset_load("digits")

    # Execute
    pool_idx, test_idx = _holdout_split(full)
    test = server_testset_load("digits")
    nodes = nodes_data_load("digits", partitioning="dirichlet:0.5", num_partitions=6, seed=1)

    # Assert: pool and test rows are the whole set with nothing in common; the nodes share the pool exactly
    assert np.intersect1d(pool_idx, test_idx).size == 0
    np.testing.assert_array_equal(np.union1d(pool_idx, test_idx), np.arange(len(full)))
    np.testing.assert_array_equal(dataset_pool(full).x, full.x[pool_idx])
    assert len(test) == test_idx.size == pytest.approx(0.2 * len(full), abs=5)
    assert sum(len(n.y_train) + len(n.y_val) for n in nodes) == pool_idx.size
    # The held-out rows keep the class mix: every digit is about a tenth of them.
    np.testing.assert_array_equal(test.y, full.y[test_idx])
    assert np.bincount(test.y.astype(int)).min() >= 30


def test_with_node_scaling_each_node_standardises_with_its_own_training_rows_only():
    # Execute
    first = node_data_load("wine", num_partitions=3, partition_id=0, seed=2, scaling="node")
    second = node_data_load("wine", num_partitions=3, partition_id=1, seed=2, scaling="node")

    # Assert: a node's training features are centred and scaled by their own statistics...
    np.testing.assert_allclose(first.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(first.x_train.std(axis=0), 1, atol=1e-4)
    # ...which its validation rows do not enter (they are not exactly centred), nor do other nodes' rows.
    assert np.abs(first.x_val.mean(axis=0)).max() > 0.05
    np.testing.assert_allclose(second.x_train.mean(axis=0), 0, atol=1e-5)
    assert "wine partition 0/3 (iid, seed 2)" in first.description


def test_the_global_scaling_from_every_nodes_sums_equals_the_pooled_training_rows_statistics():
    # Prepare: raw partitions under strong label skew
    nodes = nodes_data_load("digits", partitioning="shards:2", num_partitions=5, seed=3, val_fraction=0.1)
    assert all(n.scaling == "none" for n in nodes)

    # Execute: what each node reports, combined as the server does, applied on every node
    combined = feature_stats_combine([node_feature_stats(n) for n in nodes])
    scaled = [node_data_scale(n, "global", combined) for n in nodes]

    # Assert: exactly the mean and deviation of all training rows pooled (validation rows never enter)...
    pooled = np.concatenate([n.x_train for n in nodes])
    np.testing.assert_allclose(combined.shift, pooled.mean(axis=0), atol=1e-9)
    std = pooled.std(axis=0)
    np.testing.assert_allclose(combined.scale, np.where(std < 1e-6, 1.0, std), rtol=1e-9)
    # ...so the nodes' rows together are standardised, while each skewed node alone is not centred.
    together = np.concatenate([s.x_train for s in scaled])
    np.testing.assert_allclose(together.mean(axis=0), 0, atol=1e-4)
    assert max(np.abs(s.x_train.mean(axis=0)).max() for s in scaled) > 0.5
    assert all(s.scaling == "global" for s in scaled)
    np.testing.assert_allclose(scaled[0].x_val, (nodes[0].x_val - combined.shift) / combined.scale, rtol=1e-5)


def test_the_range_scaling_divides_digits_by_their_known_range_and_refuses_other_data(tmp_path):
    # Execute
    node = node_data_load("digits", num_partitions=2, partition_id=1, scaling="range")
    raw = node_data_load("digits", num_partitions=2, partition_id=1)

    # Assert
    np.testing.assert_allclose(node.x_train, raw.x_train / 16, rtol=1e-6)
    assert node.x_train.min() >= 0 and node.x_train.max() <= 1
    with pytest.raises(DataError, match="wine has no known fixed input range"):
        node_data_load("wine", scaling="range")
    with pytest.raises(DataError, match="the global scaling needs the federation's statistics"):
        node_data_load("wine", scaling="global")


def test_the_server_test_set_is_raw_and_never_standardised_with_its_own_statistics():
    # Execute
    test = server_testset_load("digits")

    # Assert: the raw pixel counts; the server applies the nodes' scaling (services.evaluation)
    full = dataset_load("digits")
    np.testing.assert_array_equal(test.x, full.x[_holdout_split(full)[1]])


def test_node_data_is_reproducible_and_split_into_train_and_validation():
    # Execute
    a = node_data_load("iris", partitioning="shards:2", num_partitions=4, partition_id=3, seed=5, val_fraction=0.25)
    b = node_data_load("iris", partitioning="shards:2", num_partitions=4, partition_id=3, seed=5, val_fraction=0.25)

    # Assert
    np.testing.assert_array_equal(a.x_train, b.x_train)
    total = len(a.y_train) + len(a.y_val)
    assert len(a.y_val) == round(total * 0.25) and total in (30, 31)


def test_a_csv_file_loads_with_its_target_column(tmp_path):
    # Prepare
    path = write_csv(tmp_path / "d.csv", "a,label,b\n1,0,2.5\n3,1,-4\n5,1,6e1\n")

    # Execute
    ds = csv_load(path, "label")
    last = csv_load(path)

    # Assert
    np.testing.assert_array_equal(ds.x, [[1, 2.5], [3, -4], [5, 60]])
    np.testing.assert_array_equal(ds.y, [0, 1, 1])
    np.testing.assert_array_equal(last.y, [2.5, -4, 60])  # no --target: the last column
    assert ds.task is None and ds.name == "csv:d.csv"


@pytest.mark.parametrize(("text", "target", "message"), [
    ("a,b\n1,2\n", "label", "has no target column 'label'; its columns are a, b"),
    ("a,b\n1,2\n3,x\n", "b", r"line 3, column 'b': 'x' is not a number"),
    ("a,b\n1,\n", "b", r"line 2, column 'b': '' is not a number"),
    ("a,b\n1,nan\n", "b", "not a finite number"),
    ("a,b\n1,2,3\n", "b", "line 2 has 3 fields, the header has 2"),
    ("a,b\n", "b", "needs a header row and at least one data row"),
    ("a\n1\n", None, "at least one feature column and a target column"),
])
def test_a_csv_that_cannot_be_used_gets_a_clear_error(tmp_path, text, target, message):
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=message):
        csv_load(path, target)


def test_a_missing_csv_file_or_an_unknown_data_set_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot read the CSV file"):
        dataset_load(f"csv:{tmp_path / 'nope.csv'}")
    with pytest.raises(DataError, match="unknown data set 'mnist'; choose one of digits"):
        dataset_load("mnist")
    with pytest.raises(DataError, match="--target is for CSV files"):
        dataset_load("wine", "class")


def test_a_csv_is_partitioned_whole_and_regression_targets_are_skewed_by_their_deciles(tmp_path):
    # Prepare: a regression target with 200 distinct values
    rng = np.random.default_rng(0)
    rows = "\n".join(f"{a:.4f},{a * 3:.4f}" for a in rng.normal(size=200))
    path = write_csv(tmp_path / "r.csv", "x,y\n" + rows + "\n")

    # Execute
    nodes = nodes_data_load(f"csv:{path}", partitioning="dirichlet:0.1", num_partitions=4, seed=0)

    # Assert: all 200 rows are shared out, and the partitions hold different ranges of the target
    assert sum(len(n.y_train) + len(n.y_val) for n in nodes) == 200
    medians = sorted(float(np.median(np.r_[n.y_train, n.y_val])) for n in nodes)
    assert medians[-1] - medians[0] > 1.0


def parse(*argv: str) -> dict:
    return vars(runnode.Command().create_parser("manage.py", "runnode").parse_args(argv))


def test_runnode_loads_its_partition_from_the_data_options():
    # Execute
    data = runnode._load_data("3", parse("--id", "3", "--data", "iris", "--partition", "dirichlet:1",
                                         "--num-partitions", "4"))

    # Assert: node 3 holds partition 2 (ids 1..N map to partitions 0..N-1) with the default seed 0
    expected = node_data_load("iris", partitioning="dirichlet:1", num_partitions=4, partition_id=2, seed=0)
    np.testing.assert_array_equal(data.x_train, expected.x_train)
    assert runnode._load_data("1", parse("--id", "1")) is None


@pytest.mark.parametrize(("argv", "message"), [
    (("--id", "edge", "--data", "iris", "--num-partitions", "3"), "give --partition-id"),
    (("--id", "1", "--target", "y"), "need --data"),
    (("--id", "1", "--data", "iris", "--partition", "zipf"), "unknown partitioning"),
    (("--id", "1", "--data", "iris", "--num-partitions", "2", "--partition-id", "2"), "between 0 and 1"),
])
def test_runnode_refuses_bad_data_options_before_starting(argv, message):
    with pytest.raises(runnode.CommandError, match=message):
        runnode._load_data(argv[1], parse(*argv))
