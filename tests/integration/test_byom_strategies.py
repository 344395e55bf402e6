"""Every strategy, the norm guard, DP and compressed uploads run on a model of the user's own tensors, and the
dashboard and /metrics describe it."""
import json

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregation.fl.aggregate import weighted_average
from aggregation.fl.compression import update_encode
from aggregation.fl.manifest import Manifest, TensorSpec
from aggregation.fl.registry import STRATEGIES, strategy_create
from aggregation.fl.serde import loads, params_loads
from aggregation.fl.strategy import FitRes
from aggregation.models import ModelVersion, Round, Update
from aggregation.services.updates import ParsedUpdate, update_submit
from nodes_app.models import Node

pytestmark = pytest.mark.django_db(transaction=True)

CNN = Manifest((TensorSpec("conv.weight", (8, 1, 3, 3)), TensorSpec("conv.bias", (8,)),
                TensorSpec("fc.weight", (10, 72)), TensorSpec("fc.bias", (10,))))
NODES = 7  # Bulyan with one Byzantine node needs 4f + 3
PARAMS = {"fedavgm": {"momentum": 0.9}, "fedprox": {"proximal_mu": 0.1}, "fedadagrad": {"eta": 0.1},
          "fedadam": {"eta": 0.05}, "fedyogi": {"eta": 0.05}, "fedtrimmedavg": {"beta": 0.2},
          "krum": {"num_malicious": 1}, "multikrum": {"num_malicious": 1, "num_to_keep": 3},
          "bulyan": {"num_malicious": 1}}


def initial() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(scale=0.1, size=s).astype(np.float32) for s in CNN.shapes()]


def cnn_experiment(make_experiment, **fields):
    """Experiment `cnn` over CNN's tensors, version 0 = initial(), closing rounds at NODES updates."""
    return make_experiment("cnn", model_spec=CNN.to_dict(), initial=initial(), **{
        "total_nodes": NODES, "min_nodes": NODES, **fields})


def trained(base: list[np.ndarray], seed: int, scale: float = 0.01) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(p + rng.normal(scale=scale, size=p.shape)).astype(np.float32) for p in base]


def run_round(experiment, number: int, updates: list[tuple[list[np.ndarray], int]]) -> None:
    for i, (params, n) in enumerate(updates):
        node, _ = Node.objects.get_or_create(node_id=f"n{i}", defaults={"token_hash": f"hash-{i}"})
        update_submit(experiment=experiment, round_number=number, node=node, update=ParsedUpdate(params, n))


def version(experiment, number: int) -> list[np.ndarray]:
    return params_loads(CNN, bytes(ModelVersion.objects.get(experiment=experiment, version=number).parameters))[0]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_aggregates_a_model_of_named_tensors(make_experiment, name):
    # Prepare
    experiment = cnn_experiment(make_experiment, strategy=name, strategy_params=PARAMS.get(name, {}))
    base = initial()
    first = [(trained(base, 10 + i), 10 * (i + 1)) for i in range(NODES)]

    # Execute: two rounds, so stateful strategies also restore their state
    run_round(experiment, 1, first)
    one = version(experiment, 1)
    run_round(experiment, 2, [(trained(one, 20 + i), 10) for i in range(NODES)])

    # Assert
    rounds = Round.objects.filter(experiment=experiment).order_by("number")
    assert [(r.number, r.status) for r in rounds] == [(1, "closed"), (2, "closed"), (3, "open")], [
        r.failure_reason for r in rounds]
    for number in (1, 2):
        params = version(experiment, number)
        assert [p.shape for p in params] == CNN.shapes()
        assert all(np.isfinite(p).all() for p in params)
    assert any(not np.array_equal(a, b) for a, b in zip(one, base))  # the model moved
    if name == "fedavg":
        for got, want in zip(one, weighted_average(first)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    if name == "fedmedian":
        for i, got in enumerate(one):
            np.testing.assert_allclose(got, np.median([p[i] for p, _ in first], axis=0), rtol=1e-6)
    metadata = loads(bytes(ModelVersion.objects.get(experiment=experiment, version=2).parameters))[1]
    assert (metadata["fedsite.strategy"], metadata["fedsite.parent"], metadata["fedsite.round"]) == (name, "1", "2")
    assert [t["name"] for t in json.loads(metadata["fedsite.manifest"])] == CNN.names()


@pytest.mark.parametrize("mode", ["reject", "clip"])
def test_the_norm_guard_keeps_a_far_update_out_of_a_tensor_model(make_experiment, mode, settings):
    # Prepare: six nodes move a little, one moves by about 100; the explicit bound alone judges it
    settings.FL_OUTLIER_FACTOR = 0
    experiment = cnn_experiment(make_experiment, update_max_norm=1.0, update_norm_mode=mode)
    base = initial()
    near = [(trained(base, i), 10) for i in range(NODES - 1)]
    far = trained(base, 99, scale=3.0)

    # Execute
    run_round(experiment, 1, [*near, (far, 10)])

    # Assert
    one = version(experiment, 1)
    rejected = Update.objects.get(node__node_id=f"n{NODES - 1}").rejected_reason
    if mode == "reject":
        assert "more than the limit of 1" in rejected
        for got, want in zip(one, weighted_average(near)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    else:
        assert rejected == ""
        moved = np.sqrt(sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(one, base)))
        assert moved < 0.5  # the far update counts as one of seven, clipped to norm 1


def test_central_dp_clips_and_noises_a_tensor_model(make_experiment):
    # Prepare: each update moves by about 1, five times the clip norm
    dp = {"mode": "fixed", "noise_multiplier": 0.1, "clip_norm": 0.2, "seed": 1}
    experiment = cnn_experiment(make_experiment, strategy_params={"dp": dp})
    base = initial()
    updates = [(trained(base, i, scale=0.1), 10) for i in range(NODES)]

    # Execute
    run_round(experiment, 1, updates)

    # Assert: the pure strategy's answer, and a move bounded by the clip norm plus three noise norms
    rnd = Round.objects.get(experiment=experiment, number=1)
    assert rnd.status == "closed" and rnd.metrics["dp_noise_stddev"] == pytest.approx(0.1 * 0.2 / NODES)
    one = version(experiment, 1)
    want, _ = strategy_create("fedavg", {"dp": dp}).aggregate_fit(1, base, [FitRes(p, n, {}) for p, n in updates], [])
    for got, expected in zip(one, want):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    noise = 0.1 * 0.2 / NODES * np.sqrt(CNN.num_params())
    moved = np.sqrt(sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(one, base)))
    assert 0 < moved < 0.2 + 3 * noise < 0.5


@pytest.mark.parametrize(("encoding", "tolerance"), [("fp16", 1e-3), ("int8", 1e-3)])
def test_compressed_uploads_of_a_tensor_model_are_decoded_against_its_base(api, make_experiment, register,
                                                                           encoding, tolerance):
    # Prepare
    cnn_experiment(make_experiment, total_nodes=2, min_nodes=2, update_encoding=encoding)
    base = params_loads(CNN, api.get("/api/models/0/download?experiment=cnn").content)[0]
    updates = [(trained(base, 1), 10), (trained(base, 2), 30)]

    # Execute
    codes = []
    for i, (params, n) in enumerate(updates):
        body = update_encode(CNN, params, base, encoding, {"num_examples": str(n), "metrics": '{"loss": 1.0}'})
        codes.append(api.generic("POST", "/api/rounds/1/updates?experiment=cnn", body,
                                 content_type="application/octet-stream",
                                 HTTP_AUTHORIZATION=f"Bearer {register(str(i))}").status_code)

    # Assert: the config tells nodes the encoding; version 1 is the weighted mean within the codec's error
    assert codes == [201, 201]
    assert api.get("/api/rounds/current?experiment=cnn").json()["config"]["update_encoding"] == encoding
    one = params_loads(CNN, api.get("/api/models/1/download?experiment=cnn").content)[0]
    for got, want in zip(one, weighted_average(updates)):
        np.testing.assert_allclose(got, want, atol=tolerance)


def test_the_dashboard_and_metrics_describe_a_tensor_model(api, make_experiment):
    experiment = cnn_experiment(make_experiment)
    base = initial()
    run_round(experiment, 1, [(trained(base, i), 10) for i in range(NODES)])
    one = version(experiment, 1)

    summary = api.get("/api/dashboard?experiment=cnn").json()["model"]["summary"]
    scraped = api.get("/metrics")

    assert [(layer["name"], layer["shape"]) for layer in summary["layers"]] == [
        (t.name, list(t.shape)) for t in CNN.tensors]
    for layer, arr in zip(summary["layers"], one):
        assert layer["count"] == arr.size and layer["norm"] == pytest.approx(np.linalg.norm(arr.astype(np.float64)))
    assert summary["count"] == CNN.num_params() == sum(summary["histogram"]["counts"])
    assert scraped.status_code == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(scraped.content.decode()) for s in family.samples}
    assert samples[("fedsite_rounds_total", (("experiment", "cnn"), ("status", "closed")))] == 1
    assert samples[("fedsite_updates_accepted_total", (("experiment", "cnn"),))] == NODES
    assert samples[("fedsite_model_version", (("experiment", "cnn"),))] == 1
