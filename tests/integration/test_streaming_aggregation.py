"""FedAvg-family rounds are aggregated one stored update at a time: memory of a few models, not of N."""
import tracemalloc

import numpy as np
import pytest

from aggregation.fl.aggregate import weighted_average
from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import params_loads
from aggregation.models import ModelVersion, Round
from aggregation.services.rounds import round_aggregate
from aggregation.services.updates import ParsedUpdate, update_submit
from nodes_app.models import Node

pytestmark = pytest.mark.django_db(transaction=True)

LAYERS = (500, 200, 1)  # about 100k parameters: 0.4 MB per model
N = 30


def _fill_round(make_experiment, register, strategy):
    spec = MLPSpec(LAYERS)
    experiment = make_experiment(model_spec=spec.to_dict(), strategy=strategy, total_nodes=N + 1, min_nodes=N)
    rng = np.random.default_rng(0)
    sent = []
    for i in range(N):
        register(f"n{i}")
        params = [rng.normal(scale=0.01, size=s).astype(np.float32) for s in spec.shapes()]
        update_submit(experiment=experiment, round_number=1, node=Node.objects.get(node_id=f"n{i}"),
                      update=ParsedUpdate(params, 10 + i))
        sent.append((params, 10 + i))
    rnd = Round.objects.get(experiment=experiment, number=1)
    Round.objects.filter(pk=rnd.pk).update(status=Round.Status.AGGREGATING)
    return experiment, rnd, spec, sent


def _traced_peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fedavg_holds_a_few_models_while_aggregating_many_updates(make_experiment, register):
    experiment, rnd, spec, sent = _fill_round(make_experiment, register, "fedavg")
    model_bytes = spec.num_params() * 4

    peak = _traced_peak(lambda: round_aggregate(rnd.pk))

    # Holding the 30 updates would take 30 models; the streamed mean needs the base, the sum, one
    # update and the new model's encoding.
    assert peak < 10 * model_bytes, f"peak {peak / model_bytes:.1f} models"
    blob = ModelVersion.objects.get(experiment=experiment, version=1).parameters
    got, _ = params_loads(spec, bytes(blob))
    for g, w in zip(got, weighted_average(sent)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_a_robust_strategy_still_sees_every_update(make_experiment, register):
    experiment, rnd, spec, sent = _fill_round(make_experiment, register, "fedmedian")

    peak = _traced_peak(lambda: round_aggregate(rnd.pk))

    assert peak > N * spec.num_params() * 4  # the median needs them all at once, and gets them
    blob = ModelVersion.objects.get(experiment=experiment, version=1).parameters
    got, _ = params_loads(spec, bytes(blob))
    want = [np.median(np.stack([p[i] for p, _ in sent]), axis=0) for i in range(len(got))]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
