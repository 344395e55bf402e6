"""Real data for nodes and the server's evaluation: scikit-learn's bundled sets (imported only when used) or a
CSV file; partitioned, split into train/validation, and scaled the way the experiment says (global federated
statistics, per node, or a fixed range: aggregation.fl.features). No Django: nodes import it."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aggregation.fl.features import (
    SCALINGS,
    FeatureStats,
    Scaling,
    feature_stats,
    scaling_fixed_range,
    scaling_standardize,
)
from aggregation.fl.partition import partition_indices, partitioning_parse

# name: (scikit-learn loader, task, factor the target is divided by)
BUILTIN: dict[str, tuple[str, str, float]] = {
    "digits": ("load_digits", "classification", 1.0),
    "breast_cancer": ("load_breast_cancer", "classification", 1.0),
    "wine": ("load_wine", "classification", 1.0),
    "iris": ("load_iris", "classification", 1.0),
    # Disease progression runs from 25 to 346; in hundreds, ½·MSE stays near 1 and the default learning rate works.
    "diabetes": ("load_diabetes", "regression", 100.0),
}
# The server's held-out test set: a fixed share of every bundled set that no node partition ever contains.
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 2017
REGRESSION_BINS = 10  # label-skew partitioners see a regression target as its deciles


class DataError(ValueError):
    """Data that cannot be used, with a sentence saying why (file, row, column)."""


@dataclass(frozen=True)
class Dataset:
    """A labelled table; `task` and `classes` are known for bundled sets, None/0 for a CSV file."""

    name: str
    x: np.ndarray
    y: np.ndarray
    task: str | None = None
    classes: int = 0

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class NodeData:
    """One node's share: train and validation rows, plus where they came from and how they are scaled
    (`scaling`: none = the raw values, global, node or range)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: str | None = None
    classes: int = 0
    description: str = ""
    partition: str = ""  # how the pool was split among nodes (iid, dirichlet:0.5, shards:2), and which part
    part: str = ""
    scaling: str = "none"

    @property
    def info(self) -> dict[str, str | int]:
        """What a node tells the server about its data (shown on the dashboard; the rows never leave)."""
        info: dict[str, str | int] = {"data": self.name[-100:], "train_rows": int(self.y_train.shape[0]),
                                      "validation_rows": int(self.y_val.shape[0])}
        if self.partition:
            info.update(partition=self.partition, part=self.part)
        return info

    @property
    def features(self) -> int:
        return int(self.x_train.shape[1])


def data_names() -> list[str]:
    return [*BUILTIN, "csv:PATH"]


# Bundled sets stored as plain CSV inside scikit-learn, read here without importing it (that import, which
# pulls in scipy.stats, was 0.8 s of every simulate's start): file, and whether its first line is a header.
CSV_FILES = {"digits": ("digits.csv.gz", False), "iris": ("iris.csv", True), "wine": ("wine_data.csv", True),
             "breast_cancer": ("breast_cancer.csv", True)}


def _bundled_csv(name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(data, target) of a bundled set read straight from scikit-learn's data folder; None if not there."""
    spec = importlib.util.find_spec("sklearn")
    if name not in CSV_FILES or spec is None or not spec.submodule_search_locations:
        return None
    filename, header = CSV_FILES[name]
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / filename
    try:
        with (gzip.open(path, "rt") if filename.endswith(".gz") else path.open()) as fh:
            if header:
                fh.readline()  # "n_samples,n_features,class names..."
            table = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError):
        return None  # another layout in another scikit-learn: its loader knows it
    return table[:, :-1], table[:, -1]


def _builtin(name: str) -> Dataset:
    loader, task, scale = BUILTIN[name]
    found = _bundled_csv(name)
    if found is None:
        import sklearn.datasets  # bundled with the package: no download, works offline

        bunch = getattr(sklearn.datasets, loader)()
        found = bunch.data, bunch.target
    x = np.asarray(found[0], dtype=np.float64)
    y = np.asarray(found[1], dtype=np.float64) / scale
    classes = int(y.max()) + 1 if task == "classification" else 0
    return Dataset(name, x, y, task, classes)


def csv_load(path: str | Path, target: str | None = None) -> Dataset:
    """A CSV file with a header row and numbers only; `target` names the label column (default: the last)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the CSV file {path}: {exc}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one data row")
    header = [name.strip() for name in rows[0]]
    if len(header) < 2:
        raise DataError(f"{path} needs at least one feature column and a target column, its header is {header}")
    target = header[-1] if target is None else target
    if target not in header:
        raise DataError(f"{path} has no target column {target!r}; its columns are {', '.join(header)}")
    values = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path} line {line} has {len(row)} fields, the header has {len(header)}")
        for col, cell in enumerate(row):
            try:
                number = float(cell)
            except ValueError:
                number = math.nan
                if cell.strip().lower() not in ("nan", "inf", "-inf", "infinity", "-infinity"):
                    raise DataError(f"{path} line {line}, column {header[col]!r}: {cell!r} is not a number; "
                                    "every value must be numeric (encode categories as numbers first)") from None
            if not math.isfinite(number):
                raise DataError(f"{path} line {line}, column {header[col]!r}: {cell!r} is not a finite number")
            values[line - 2, col] = number
    index = header.index(target)
    x = np.delete(values, index, axis=1)
    return Dataset(f"csv:{path.name}", x, values[:, index])


def dataset_load(source: str, target: str | None = None) -> Dataset:
    """`digits`, `breast_cancer`, `wine`, `iris`, `diabetes` or `csv:PATH` (with `target` for a CSV)."""
    if source.startswith("csv:"):
        return csv_load(source[4:], target)
    if source not in BUILTIN:
        raise DataError(f"unknown data set {source!r}; choose one of {', '.join(data_names())}")
    if target is not None:
        raise DataError(f"--target is for CSV files; {source} has its own target")
    return _builtin(source)


def _labels_for_partitioning(ds: Dataset) -> np.ndarray:
    """Class labels; for a regression target (or a CSV of unknown task) with many values, its deciles."""
    if ds.task == "classification" or np.unique(ds.y).size <= REGRESSION_BINS:
        return ds.y
    edges = np.quantile(ds.y, np.linspace(0, 1, REGRESSION_BINS + 1)[1:-1])
    return np.searchsorted(edges, ds.y, side="right")


def _holdout_split(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) indices of a bundled set; stratified by class so the test set has the global class mix."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    labels = _labels_for_partitioning(ds)
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test.append(members[: int(round(members.size * HOLDOUT_FRACTION))])
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(ds)), test_idx), test_idx


def _subset(ds: Dataset, idx: np.ndarray) -> Dataset:
    return Dataset(ds.name, ds.x[idx], ds.y[idx], ds.task, ds.classes)


def dataset_pool(ds: Dataset) -> Dataset:
    """What nodes share out among themselves: a bundled set without its held-out test rows; a CSV whole."""
    return _subset(ds, _holdout_split(ds)[0]) if ds.name in BUILTIN else ds


def standardizer_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation; a constant feature is only centred (scale 1), not divided by 0."""
    own = scaling_standardize(x)
    return own.shift, own.scale


def standardize(x: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return Scaling(*stats).apply(x)


def _node_data(pool: Dataset, idx: np.ndarray, label: str, seed: int, partition_id: int,
               val_fraction: float, partition: str = "", part: str = "") -> NodeData:
    # Each node shuffles its own rows with its own stream, so its split does not depend on other nodes.
    order = np.random.default_rng([seed, partition_id]).permutation(idx)
    n_val = int(round(order.size * val_fraction))
    if val_fraction > 0 and order.size >= 2:
        n_val = min(max(n_val, 1), order.size - 1)
    train, val = np.sort(order[n_val:]), np.sort(order[:n_val])
    return NodeData(pool.name, pool.x[train], pool.y[train].astype(np.float32), pool.x[val],
                    pool.y[val].astype(np.float32), pool.task, pool.classes,
                    f"{label}: {train.size} train + {val.size} validation rows", partition, part)


def node_feature_stats(data: NodeData, **noise: object) -> FeatureStats:
    """What the node tells the server about its features: count, sum and sum of squares of its raw training
    rows (validation rows never enter); `noise` goes to feature_stats (noise_multiplier, clip, rng)."""
    if data.scaling != "none":
        raise ValueError(f"feature statistics are taken on the raw rows, these are already scaled ({data.scaling})")
    return feature_stats(data.x_train, **noise)  # type: ignore[arg-type]


def scaling_for(mode: str, data: NodeData | Dataset, combined: Scaling | None = None) -> Scaling:
    """The scaling `mode` gives a party's raw data: the federation's combined statistics (global), the party's
    own training rows (node) or the data set's known input range (range)."""
    if mode == "global":
        if combined is None:
            raise ValueError("the global scaling needs the federation's combined feature statistics")
        return combined
    if mode == "node":
        return scaling_standardize(data.x_train if isinstance(data, NodeData) else data.x)
    if mode == "range":
        features = data.features if isinstance(data, NodeData) else int(data.x.shape[1])
        return scaling_fixed_range(data.name, features)
    raise ValueError(f"unknown feature scaling {mode!r}; choose one of {', '.join(SCALINGS)}")


def node_data_scale(data: NodeData, mode: str, combined: Scaling | None = None) -> NodeData:
    """`data` (raw) with its train and validation rows scaled as `mode` says (see scaling_for)."""
    if data.scaling != "none":
        raise ValueError(f"the node's rows are already scaled ({data.scaling})")
    try:
        scaling = scaling_for(mode, data, combined)
        return replace(data, x_train=scaling.apply(data.x_train), x_val=scaling.apply(data.x_val), scaling=mode)
    except ValueError as exc:
        raise DataError(f"{data.name}: {exc}") from None


def nodes_data_load(source: str, *, target: str | None = None, partitioning: str = "iid", num_partitions: int = 1,
                    seed: int = 0, val_fraction: float = 0.2, only: int | None = None,
                    scaling: str = "none") -> list[NodeData]:
    """Every node's share of the data set's pool (or only partition `only`, as a one-item list).

    Nodes that use the same source, `seed`, partitioning and number of partitions get disjoint
    partitions; each is split into train and validation rows, raw (`scaling` none, what the global
    scaling starts from) or scaled on its own: node (its training rows' mean and deviation) or range.
    """
    if scaling not in ("none", "node", "range"):
        raise DataError(f"a node can scale its data alone with node or range, not {scaling!r}; the global "
                        "scaling needs the federation's statistics (node_data_scale)")
    if not 0 <= val_fraction < 1:
        raise DataError(f"the validation fraction must be at least 0 and below 1, got {val_fraction}")
    if only is not None and not (isinstance(only, int) and 0 <= only < num_partitions):
        raise DataError(f"the partition id must be between 0 and {num_partitions - 1}, got {only}")
    pool = dataset_pool(dataset_load(source, target))
    try:
        scheme = partitioning_parse(partitioning)
        parts = partition_indices(scheme, _labels_for_partitioning(pool), num_partitions, seed)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    wanted = range(num_partitions) if only is None else [only]
    nodes = [_node_data(pool, parts[i], f"{pool.name} partition {i}/{num_partitions} ({scheme}, seed {seed})",
                        seed, i, val_fraction, str(scheme), f"{i}/{num_partitions}") for i in wanted]
    return nodes if scaling == "none" else [node_data_scale(n, scaling) for n in nodes]


def node_data_load(source: str, *, target: str | None = None, partitioning: str = "iid", num_partitions: int = 1,
                   partition_id: int = 0, seed: int = 0, val_fraction: float = 0.2,
                   scaling: str = "none") -> NodeData:
    """Partition `partition_id` of `num_partitions`: what `runnode --data` holds."""
    return nodes_data_load(source, target=target, partitioning=partitioning, num_partitions=num_partitions,
                           seed=seed, val_fraction=val_fraction, only=partition_id, scaling=scaling)[0]


def server_testset_load(source: str, target: str | None = None) -> Dataset:
    """The server's test set, raw: a bundled set's held-out rows, or a whole CSV file the server owns. It is
    scored with the scaling the nodes use (services.evaluation), never with statistics of its own."""
    ds = dataset_load(source, target)
    if ds.name in BUILTIN:
        ds = _subset(ds, _holdout_split(ds)[1])
    return Dataset(ds.name, ds.x, ds.y.astype(np.float32), ds.task, ds.classes)

