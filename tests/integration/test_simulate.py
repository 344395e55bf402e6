"""`manage.py simulate`: virtual nodes drive the real round lifecycle, strategy and server evaluation."""
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from aggregation.datasets import server_testset_load
from aggregation.fl.features import Scaling
from aggregation.fl.metrics import evaluate
from aggregation.fl.model import MLPSpec, init_parameters
from aggregation.fl.serde import dumps_sha256, loads, params_loads
from aggregation.models import Experiment, FeatureReport, Update
from aggregation.selectors import version_parameters
from aggregation.simulation import Simulation, SimulationConfig
from nodes_app.models import Node
from nodes_app.training import fit_and_evaluate, shuffle_seed

pytestmark = pytest.mark.django_db(transaction=True)


def simulate(*argv: str) -> str:
    out = StringIO()
    call_command("simulate", *argv, stdout=out)
    return out.getvalue()


def test_five_simulated_nodes_on_digits_reach_90_percent_test_accuracy():
    # Execute: fixed seeds, IID split, at most 8 rounds
    output = simulate("--nodes", "5", "--rounds", "8", "--data", "digits", "--partition", "iid", "--seed", "0",
                      "--name", "five")

    # Assert: the server's own evaluation of the last model, on digits no node ever held
    experiment = Experiment.objects.get(name="five")
    rounds = list(experiment.rounds.order_by("number"))
    assert [r.status for r in rounds] == ["closed"] * 8
    assert rounds[-1].metrics["test_accuracy"] >= 0.90
    assert rounds[-1].metrics["test_accuracy"] > rounds[0].metrics["test_accuracy"]
    assert experiment.status == "finished" and experiment.finish_reason == "max_rounds reached (8)"
    # It went through the real services: 5 stored updates per round with their validation metrics, 8 versions.
    assert Update.objects.filter(round__experiment=experiment).count() == 40
    assert all("val_accuracy" in u.metrics for u in Update.objects.filter(round__experiment=experiment))
    assert experiment.versions.count() == 9
    assert "test_accuracy" in output and "round 8/8 closed" in output
    # The virtual nodes say what they hold, as real ones do, and are done once the run has ended.
    nodes = list(Node.objects.filter(node_id__startswith="sim-").order_by("node_id"))
    assert [n.status for n in nodes] == ["done"] * 5
    assert [n.data["part"] for n in nodes] == [f"{i}/5" for i in range(5)]
    assert {n.data["partition"] for n in nodes} == {"iid"} and {n.data["data"] for n in nodes} == {"digits"}


def test_a_virtual_node_uploads_exactly_what_its_training_function_computes():
    # Prepare
    sim = Simulation(SimulationConfig(nodes=3, rounds=1, data="iris", partition="dirichlet:1", seed=4, name="same",
                                      batch_size=8))
    experiment = sim.setup()

    # Execute
    rnd = sim.step()

    # Assert: node sim-2's stored update is fit_and_evaluate on its partition, shuffled with (seed 4, node 2,
    # round 1), as `runnode --id 2 --seed 4` shuffles
    spec = MLPSpec((4, 32, 3), "classification")
    config = {"epochs": 5, "learning_rate": 0.1, "batch_size": 8, "feature_scaling": "global"}
    expected, metrics = fit_and_evaluate(spec, init_parameters(spec, 4), sim.data[1], config,
                                         seed=shuffle_seed(4, 2, 1))
    stored = rnd.updates.get(node__node_id="sim-2")
    for got, want in zip(params_loads(spec, bytes(stored.parameters))[0], expected):
        np.testing.assert_array_equal(got, want)
    assert stored.metrics == pytest.approx(metrics)
    assert stored.num_examples == len(sim.data[1].y_train)
    assert experiment.model_spec == spec.to_dict()


def test_simulated_nodes_report_feature_statistics_and_everyone_uses_the_combined_scaling():
    # Prepare: the raw partitions, as each virtual node holds them before round 1
    config = SimulationConfig(nodes=4, rounds=1, data="digits", partition="shards:2", seed=1, name="fa",
                              val_fraction=0.1)
    sim = Simulation(config)
    raw = list(sim.data)

    # Execute
    experiment = sim.setup()
    rnd = sim.step()

    # Assert: one report per node through the service; the scaling is the pooled training rows' statistics...
    assert FeatureReport.objects.filter(experiment=experiment).count() == 4
    experiment.refresh_from_db()
    scaling = Scaling.from_dict(experiment.feature_stats)
    pooled = np.concatenate([d.x_train for d in raw])
    np.testing.assert_allclose(scaling.shift, pooled.mean(axis=0), rtol=1e-9)
    # ...every node trains on its rows scaled with it...
    for before, after in zip(raw, sim.data):
        np.testing.assert_allclose(after.x_train, scaling.apply(before.x_train))
        assert after.scaling == "global"
    # ...and the server scores the round's model on its test rows scaled the same way.
    spec = sim.spec
    version = experiment.versions.get(version=1)
    test = server_testset_load("digits")
    expected = evaluate(spec, version_parameters(version.pk, version.sha256), scaling.apply(test.x), test.y)
    assert rnd.metrics["test_accuracy"] == pytest.approx(expected["accuracy"])


@pytest.mark.parametrize("scaling", ["node", "range"])
def test_the_node_and_range_scalings_remain_options(scaling):
    # Execute
    simulate("--nodes", "3", "--rounds", "1", "--data", "digits", "--scaling", scaling, "--name", f"s-{scaling}")

    # Assert: node: reports (for the server's test set) but each node standardises alone; range: no reports
    experiment = Experiment.objects.get(name=f"s-{scaling}")
    assert experiment.feature_scaling == scaling
    assert FeatureReport.objects.filter(experiment=experiment).count() == (3 if scaling == "node" else 0)
    assert "test_accuracy" in experiment.rounds.get(number=1).metrics


def test_the_run_seed_changes_every_shuffle_and_no_node_replays_another_nodes_stream():
    assert shuffle_seed(0, 1, 2) != shuffle_seed(0, 2, 1)  # i + round gave node 1/round 2 node 2/round 1's stream
    assert shuffle_seed(0, 3, 5) != shuffle_seed(1, 3, 5)
    assert shuffle_seed(7, 3, 5) == shuffle_seed(7, 3, 5)
    assert len({shuffle_seed(0, n, r) for n in range(1, 11) for r in range(1, 101)}) == 1000


def test_worker_processes_give_the_same_models_as_one_process():
    # Execute
    simulate("--nodes", "4", "--rounds", "2", "--data", "wine", "--seed", "1", "--name", "one")
    simulate("--nodes", "4", "--rounds", "2", "--data", "wine", "--seed", "1", "--name", "two", "--workers", "2")

    # Assert
    # The stored files differ in their metadata (the experiment's name); the parameters must not.
    one, two = ([dumps_sha256(loads(bytes(blob))[0]) for blob in Experiment.objects.get(name=n).versions
                 .order_by("version").values_list("parameters", flat=True)] for n in ("one", "two"))
    assert one == two and len(set(one)) == 3


def test_a_stop_condition_ends_a_simulation_early_and_the_table_says_so():
    # Execute
    output = simulate("--nodes", "3", "--rounds", "15", "--data", "iris", "--seed", "0",
                      "--stop-when", "val_accuracy>=0.8", "--patience", "2", "--name", "early")

    # Assert
    experiment = Experiment.objects.get(name="early")
    last = experiment.rounds.order_by("-number").first()
    assert experiment.status == "finished" and last.number < 15
    assert last.metrics["stopped_early"] is True
    reason = f"stopped early at round {last.number}: val_accuracy >= 0.8 for 2 rounds in a row"
    assert experiment.finish_reason == reason
    assert "stopped early" in output.splitlines()[-2] and experiment.finish_reason in output


@pytest.mark.parametrize(("argv", "message"), [
    (("--nodes", "0"), "between 1 and 1000"),
    (("--nodes", "1001"), "between 1 and 1000"),
    (("--partition", "zipf"), "unknown partitioning"),
    (("--data", "mnist"), "unknown data set"),
    (("--stop-when", "accuracy"), "looks like"),
    (("--strategy-params", '{"momentum": 2}'), "momentum"),
])
def test_bad_simulation_options_are_refused_with_a_sentence(argv, message):
    extra = ("--strategy", "fedavgm") if "--strategy-params" in argv else ()
    with pytest.raises(CommandError, match=message):
        simulate("--rounds", "1", *argv, *extra)


def uploaded(output: str) -> tuple[int, int]:
    """(bodies, bytes) from the command's `uploads:` line."""
    line = next(x for x in output.splitlines() if x.startswith("uploads: "))
    bodies, size = line.removeprefix("uploads: ").split(", ")[:2]
    return int(bodies.split()[0]), int(size.split()[0].replace(",", ""))


def test_int8_update_encoding_shrinks_the_uploads_and_the_server_stores_the_decoded_delta():
    # Execute: the same one-round federation, float32 and int8
    # (128 hidden units: 1,027 parameters, so tensor data, not the header, dominates a body)
    argv = ("--nodes", "3", "--rounds", "1", "--data", "iris", "--seed", "0", "--hidden", "128")
    plain = simulate(*argv, "--name", "plain")
    int8 = simulate(*argv, "--name", "int8", "--update-encoding", "int8")

    # Assert: the experiment asks for int8 and the bodies on the wire are under half the float32 ones
    assert Experiment.objects.get(name="int8").update_encoding == "int8"
    assert Experiment.objects.get(name="plain").update_encoding == "none"
    (plain_bodies, plain_bytes), (int8_bodies, int8_bytes) = uploaded(plain), uploaded(int8)
    assert plain_bodies == int8_bodies == 3
    assert int8_bytes < 0.5 * plain_bytes
    assert "(int8)" in int8 and "uploads int8" in int8.splitlines()[0]
    # Same seeds, so the same training: int8 stores base + the dequantised delta, within scale/2 of float32
    spec = MLPSpec((4, 128, 3), "classification")
    base = init_parameters(spec, 0)
    exact, rounded = (params_loads(spec, bytes(Update.objects.get(round__experiment__name=n, round__number=1,
                                                                  node__node_id="sim-2").parameters))[0]
                      for n in ("plain", "int8"))
    assert any(not np.array_equal(e, r) for e, r in zip(exact, rounded))
    for b, e, r in zip(base, exact, rounded):
        half_step = np.max(np.abs(e - b)) / 127 / 2
        np.testing.assert_array_less(np.abs(r - e), half_step * 1.001 + 1e-7)


def test_in_process_uploads_store_what_http_uploads_store_and_keep_their_rules():
    # Prepare: two identical federations, one fed through update_submit one by one, one in-process at once
    from aggregation.services.updates import ParsedUpdate, update_submit, updates_submit_in_process
    from fedsite.errors import ApplicationError
    from nodes_app.services import node_issue_token

    spec = MLPSpec((4, 8, 3), "classification")
    nodes = [node_issue_token(f"n{i}", rotate=True)[0] for i in range(3)]
    made = {}
    for name in ("one", "all"):
        made[name] = Simulation(SimulationConfig(nodes=3, rounds=2, data="iris", name=name, hidden=(8,)))
        made[name].setup()
    base = init_parameters(spec, 0)
    updates = [(node, ParsedUpdate(init_parameters(spec, 10 + i), 5 + i, {"loss": 0.5})) for i, node in
               enumerate(nodes)]

    # Execute
    for node, update in updates:
        update_submit(experiment=made["one"].experiment, round_number=1, node=node, update=update)
    accepted = updates_submit_in_process(experiment=made["all"].experiment, round_number=1, base=base,
                                         updates=updates)

    # Assert: the same rows (digest, examples, distance from the model, metrics) and the round closed either way
    def rows(name):
        return sorted(Update.objects.filter(round__experiment__name=name)
                      .values_list("node__node_id", "sha256", "num_examples", "delta_norm", "metrics"))
    assert accepted == 3 and rows("one") == rows("all")
    for name in ("one", "all"):
        assert Experiment.objects.get(name=name).rounds.get(number=1).status == "closed"
    # A repeat is a no-op; a different update for a closed round is refused as an HTTP upload would be.
    assert updates_submit_in_process(experiment=made["all"].experiment, round_number=1, base=base,
                                     updates=updates) == 0
    changed = [(nodes[0], ParsedUpdate(init_parameters(spec, 99), 5, {"loss": 0.5}))]
    with pytest.raises(ApplicationError, match="already uploaded a different update"):
        updates_submit_in_process(experiment=made["all"].experiment, round_number=1, base=base, updates=changed)
