"""One bad node under the defaults: it cannot poison the model, outweigh the others, or stall the rounds."""
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from aggregation.fl.aggregate import weighted_average
from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import dumps, params_loads
from aggregation.models import ModelVersion, Round, Update
from aggregation.services.sweep import rounds_sweep
from tests.conftest import params_for

pytestmark = pytest.mark.django_db(transaction=True)


def version_params(experiment, version):
    blob = ModelVersion.objects.get(experiment=experiment, version=version).parameters
    return params_loads(MLPSpec(), bytes(blob))[0]


def nudged(base, amount):
    return [p + np.float32(amount) for p in base]


def test_an_update_a_million_times_too_large_is_left_out_under_the_defaults(experiment, register, uploader):
    # Prepare: the experiment's version 0 (seed 7); two honest nodes move it a little
    base = params_for(7)
    honest = [nudged(base, 0.01), nudged(base, 0.02)]
    tokens = [register(str(i)) for i in range(3)]

    # Execute
    uploader(tokens[0], 1, honest[0])
    uploader(tokens[1], 1, honest[1])
    uploader(tokens[2], 1, [p * np.float32(1e6) for p in base])

    # Assert: the model is the honest mean, and the reason names the median rule
    assert "more than 10x the round's median distance" in Update.objects.get(node__node_id="2").rejected_reason
    for got, want in zip(version_params(experiment, 1), weighted_average([(h, 10) for h in honest])):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert Round.objects.get(experiment=experiment, number=1).metrics["rejected"] == 1


def test_a_node_claiming_two_billion_examples_weighs_at_most_ten_medians(experiment, register, uploader):
    base = params_for(7)
    updates = [nudged(base, 0.01), nudged(base, 0.02), nudged(base, 0.03)]
    tokens = [register(str(i)) for i in range(3)]

    for token, params, count in zip(tokens, updates, [10, 10, 2**31 - 1]):
        uploader(token, 1, params, count)

    expected = weighted_average(list(zip(updates, [10, 10, 100])))
    for got, want in zip(version_params(experiment, 1), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_non_finite_aggregate_fails_the_round_and_keeps_the_model(make_experiment, register, uploader):
    # Prepare: FedAvgM with a server learning rate of 10 pushes two huge (finite) updates past float32's range
    experiment = make_experiment(strategy="fedavgm", strategy_params={"server_learning_rate": 10.0, "momentum": 0.0},
                                 total_nodes=2, min_nodes=2)
    huge = [np.full_like(p, 1e38) for p in params_for(7)]
    tokens = [register(str(i)) for i in range(2)]

    # Execute
    uploader(tokens[0], 1, huge)
    uploader(tokens[1], 1, huge)

    # Assert: no version 1; round 2 retries on version 0
    failed = Round.objects.get(experiment=experiment, number=1)
    assert failed.status == Round.Status.FAILED
    assert "the aggregate is not finite" in failed.failure_reason and "previous model is kept" in failed.failure_reason
    assert list(experiment.versions.values_list("version", flat=True)) == [0]
    assert Round.objects.get(experiment=experiment, number=2).base_version.version == 0


def report(api, token, number, reason="tensor 'w1' contains NaN or infinity", experiment="exp"):
    return api.post(f"/api/rounds/{number}/failures?experiment={experiment}", {"reason": reason}, format="json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")


def test_a_round_that_nodes_cannot_train_fails_at_its_deadline_instead_of_waiting(experiment, api, register,
                                                                                   uploader):
    # Prepare: 3 nodes, quorum 2; one uploads, two say they cannot train
    tokens = [register(str(i)) for i in range(3)]
    uploader(tokens[0], 1, nudged(params_for(7), 0.01))

    # Execute
    answers = [report(api, tokens[1], 1), report(api, tokens[2], 1, "out of memory")]
    before = rounds_sweep()
    after = rounds_sweep(now=timezone.now() + timedelta(seconds=301))

    # Assert: recorded, left alone before the deadline, failed (not extended) at it, with the reasons
    assert [a.status_code for a in answers] == [201, 201] and (before, after) == (0, 1)
    failed = Round.objects.get(experiment=experiment, number=1)
    assert failed.status == Round.Status.FAILED
    assert failed.node_failures == {"1": "tensor 'w1' contains NaN or infinity", "2": "out of memory"}
    assert "2 node(s) could not train on model v0" in failed.failure_reason and "node 2: out of memory" in \
        failed.failure_reason
    assert api.get("/api/rounds/1?experiment=exp").json()["node_failures"] == failed.node_failures


def test_a_round_with_its_quorum_aggregates_as_soon_as_the_rest_report_failures(experiment, api, register,
                                                                                 uploader):
    tokens = [register(str(i)) for i in range(3)]
    uploader(tokens[0], 1, nudged(params_for(7), 0.01))
    uploader(tokens[1], 1, nudged(params_for(7), 0.02))
    assert Round.objects.get(experiment=experiment, number=1).status == Round.Status.OPEN

    assert report(api, tokens[2], 1).status_code == 201

    assert Round.objects.get(experiment=experiment, number=1).status == Round.Status.CLOSED
    assert experiment.versions.filter(version=1).exists()


@pytest.mark.parametrize(("case", "status", "error"), [
    ("no_token", 401, "missing_token"), ("no_reason", 400, "bad_reason"), ("closed", 409, "round_closed"),
    ("uploaded", 409, "already_uploaded"), ("unknown", 404, "unknown_round"), ("deep", 400, "bad_json"),
])
def test_failure_reports_that_cannot_be_taken_are_refused(experiment, api, register, uploader, case, status, error):
    tokens = [register(str(i)) for i in range(3)]
    if case == "closed":
        for token in tokens:
            uploader(token, 1, nudged(params_for(7), 0.01))
    if case == "uploaded":
        uploader(tokens[0], 1, nudged(params_for(7), 0.01))
    url = f"/api/rounds/{99 if case == 'unknown' else 1}/failures?experiment=exp"
    auth = {} if case == "no_token" else {"HTTP_AUTHORIZATION": f"Bearer {tokens[0]}"}
    body = b"[" * 50_000 if case == "deep" else (b"{}" if case == "no_reason" else b'{"reason": "nan"}')

    response = api.generic("POST", url, body, content_type="application/json", **auth)

    assert (response.status_code, response.json()["error"]) == (status, error)
    assert Round.objects.get(experiment=experiment, number=1).node_failures == {}


def test_a_float32_tensor_relabelled_as_integers_is_refused(experiment, api, register):
    # The bytes of float32 values read as int32 are numbers near 1e9: they must never reach a round.
    token = register("0")
    tensors = {name: p for name, p in zip(MLPSpec().names(), params_for(7))}
    body = bytearray(dumps(tensors, {"num_examples": "10"}))
    header_len = int.from_bytes(body[:8], "little")
    header = body[8:8 + header_len].replace(b'"F32"', b'"I32"')
    body[8:8 + header_len] = header

    response = api.generic("POST", "/api/rounds/1/updates?experiment=exp", bytes(body),
                           content_type="application/octet-stream", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 400 and "floating point" in response.json()["detail"]
    assert not Update.objects.exists()
