"""Federated feature statistics through the HTTP API: nodes POST count/sum/sum_sq to /api/features before round 1,
the server combines them once (all nodes, or the quorum after the round timeout), hands the scaling to every node,
and scores its test set with it. Bad reports get a 4xx JSON sentence and change nothing."""
import datetime as dt

import numpy as np
import pytest

from aggregation.datasets import server_testset_load
from aggregation.fl.aggregate import weighted_average
from aggregation.fl.features import Scaling, feature_stats
from aggregation.fl.metrics import evaluate
from aggregation.fl.model import MLPSpec, init_parameters
from aggregation.models import Experiment, FeatureReport, Round
from aggregation.services.sweep import rounds_sweep

pytestmark = pytest.mark.django_db(transaction=True)

SPEC = MLPSpec((3, 4, 1))


def table(seed: int, rows: int = 20, loc: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, 2.0, (rows, 3))


def post(api, token: str, body, experiment: str = "exp"):
    return api.post(f"/api/features?experiment={experiment}", body, format="json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")


def test_the_scaling_is_fixed_when_every_node_has_reported_and_is_the_pooled_statistics(api, make_experiment,
                                                                                         register):
    # Prepare: three nodes with differently placed data
    make_experiment(model_spec=SPEC.to_dict(), total_nodes=3, min_nodes=2)
    tables = [table(i, 10 + 5 * i, loc=3.0 * i) for i in range(3)]
    tokens = [register(str(i)) for i in range(3)]

    # Execute
    answers = [post(api, t, feature_stats(x).to_dict()) for t, x in zip(tokens, tables)]

    # Assert: collecting after one and two reports, fixed at the third, exactly the pooled mean and deviation
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert [a.json()["status"] for a in answers] == ["collecting", "collecting", "ready"]
    assert answers[1].json()["reported"] == 2 and answers[1].json()["required"] == 3
    state = api.get("/api/features?experiment=exp").json()
    pooled = np.concatenate(tables)
    assert state["scaling"] == "global" and state["nodes"] == 3 and state["count"] == len(pooled)
    np.testing.assert_allclose(state["shift"], pooled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(state["scale"], pooled.std(axis=0), rtol=1e-9)


def test_a_repeated_report_is_idempotent_a_different_one_or_a_late_one_is_a_409(api, make_experiment, register):
    # Prepare
    make_experiment(model_spec=SPEC.to_dict(), total_nodes=2, min_nodes=2)
    first, second, late = register("1"), register("2"), register("3")
    body = feature_stats(table(1)).to_dict()
    assert post(api, first, body).status_code == 201

    # Execute
    again = post(api, first, body)
    changed = post(api, first, feature_stats(table(2)).to_dict())
    post(api, second, feature_stats(table(3)).to_dict())
    too_late = post(api, late, feature_stats(table(4)).to_dict())

    # Assert
    assert again.status_code == 200 and again.json()["report"] == "already_accepted"
    assert changed.status_code == 409 and changed.json()["error"] == "feature_stats_conflict"
    assert too_late.status_code == 409 and too_late.json()["error"] == "feature_stats_fixed"
    assert "was fixed from 2 nodes' statistics" in too_late.json()["detail"]
    assert FeatureReport.objects.count() == 2


@pytest.mark.parametrize(("body", "code", "detail"), [
    ([1, 2], "bad_json", "Send a JSON object with count, sum and sum_sq."),
    ({"count": 0, "sum": [1, 2, 3], "sum_sq": [1, 2, 3]}, "bad_feature_stats", "count must be the number"),
    ({"count": True, "sum": [1, 2, 3], "sum_sq": [1, 2, 3]}, "bad_feature_stats", "count must be the number"),
    ({"count": 5, "sum": "1,2,3", "sum_sq": [1, 2, 3]}, "bad_feature_stats", "sum must be a non-empty list"),
    ({"count": 5, "sum": [1, 2, None], "sum_sq": [1, 2, 3]}, "bad_feature_stats", "sum must be a non-empty list"),
    ('{"count": 5, "sum": [1, 2, 3], "sum_sq": [1, 2, 1e400]}', "bad_feature_stats", "sum_sq contains NaN or inf"),
    ('{"count": 5, "sum": [1, 2, NaN], "sum_sq": [1, 2, 3]}', "bad_feature_stats", "sum contains NaN or inf"),
    ({"count": 5, "sum": [1, 2], "sum_sq": [1, 2]}, "bad_feature_stats", "cover 2 features, the experiment's "
                                                                          "model takes 3"),
    ({"count": 5, "sum": [1, 2, 3], "sum_sq": [1, -2, 3]}, "bad_feature_stats", "sum_sq cannot be negative"),
    ({"count": 5, "sum": [1, 2, 3], "sum_sq": [1, 2, 3], "mean": 1}, "bad_feature_stats", "Unknown field(s) mean"),
])
def test_bad_reports_get_a_400_with_a_sentence_and_store_nothing(api, make_experiment, register, body, code, detail):
    make_experiment(model_spec=SPEC.to_dict())
    if isinstance(body, str):  # what a JSON encoder would refuse to write, sent as raw text
        response = api.post("/api/features?experiment=exp", body, content_type="application/json",
                            HTTP_AUTHORIZATION=f"Bearer {register('1')}")
    else:
        response = post(api, register("1"), body)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == code and detail in response.json()["detail"]
    assert FeatureReport.objects.count() == 0


def test_reports_need_a_node_token_and_a_model_whose_data_the_server_scales(api, make_experiment, register):
    # Prepare: a range experiment, and a model of your own (a tensor manifest)
    make_experiment(model_spec=SPEC.to_dict())
    make_experiment(name="ranged", model_spec=SPEC.to_dict(), feature_scaling="range")
    body = feature_stats(table(1)).to_dict()

    # Execute
    anonymous = api.post("/api/features?experiment=exp", body, format="json")
    ranged = post(api, register("1"), body, experiment="ranged")

    # Assert
    assert anonymous.status_code == 401 and anonymous.json()["error"] in ("missing_token", "bad_token")
    assert ranged.status_code == 409 and ranged.json()["error"] == "feature_stats_unused"
    assert api.get("/api/features?experiment=ranged").json()["status"] == "local"
    assert api.get("/api/features?experiment=nope").status_code == 404


def test_with_a_quorum_the_scaling_is_fixed_once_the_round_timeout_has_passed(api, make_experiment, register):
    # Prepare: 3 expected, quorum 2; two reports in
    make_experiment(model_spec=SPEC.to_dict(), total_nodes=3, min_nodes=2, round_timeout_s=30)
    for i in range(2):
        post(api, register(str(i)), feature_stats(table(i)).to_dict())
    assert api.get("/api/features?experiment=exp").json()["status"] == "collecting"

    # Execute: the first report is now older than the round timeout
    FeatureReport.objects.update(received_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=31))
    before = api.get("/api/features?experiment=exp").json()  # a read never combines: the sweeper does
    rounds_sweep()
    state = api.get("/api/features?experiment=exp").json()

    # Assert
    assert before["status"] == "collecting"
    assert state["status"] == "ready" and state["nodes"] == 2


def test_the_round_config_names_the_scaling_and_the_server_scores_only_once_it_is_fixed(api, make_experiment,
                                                                                       register, uploader, caplog):
    # Prepare: a digits classifier scored by the server; two nodes
    spec = MLPSpec((64, 8, 10), "classification")
    make_experiment(model_spec=spec.to_dict(), total_nodes=2, min_nodes=2, server_eval="digits")
    tokens = [register(str(i)) for i in range(2)]
    assert api.get("/api/rounds/current?experiment=exp").json()["config"]["feature_scaling"] == "global"
    updates = [(init_parameters(spec, 20 + i), 10) for i in range(2)]
    for number in (1, 2):
        for i, (token, (params, n)) in enumerate(zip(tokens, updates)):
            if number == 2:  # the nodes report between round 1 and round 2 (here: to show the difference)
                rows = np.random.default_rng(i).uniform(0, 16, (30, 64))
                post(api, token, feature_stats(rows).to_dict())
            assert uploader(token, number, params, n, binary=False).status_code == 201

    # Assert: round 1 was not scored (no scaling the nodes use yet, and never the test set's own statistics);
    # round 2 is scored with the combined scaling
    rounds = {r.number: r.metrics for r in Round.objects.filter(experiment__name="exp")}
    assert "test_accuracy" not in rounds[1]
    assert "the nodes have not reported their feature statistics yet" in caplog.text
    experiment = Experiment.objects.get(name="exp")
    scaling = Scaling.from_dict(experiment.feature_stats)
    test = server_testset_load("digits")
    expected = evaluate(spec, weighted_average(updates), scaling.apply(test.x), test.y)
    assert rounds[2]["test_accuracy"] == pytest.approx(expected["accuracy"])
    assert rounds[2]["test_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    pooled = np.concatenate([np.random.default_rng(i).uniform(0, 16, (30, 64)) for i in range(2)])
    np.testing.assert_allclose(scaling.shift, pooled.mean(axis=0), rtol=1e-12)


def test_a_model_of_your_own_gets_no_feature_scaling_in_its_config(api, make_experiment):
    # A tensor manifest's clients load and scale their own data: nothing is forced on them.
    from aggregation.fl.manifest import Manifest, TensorSpec
    manifest = Manifest((TensorSpec("w", (2, 2)),))
    make_experiment(model_spec=manifest.to_dict(), initial=[np.zeros((2, 2), np.float32)])
    assert "feature_scaling" not in api.get("/api/rounds/current?experiment=exp").json()["config"]


def test_an_operator_chooses_the_scaling_and_an_unknown_one_is_refused_with_the_choices(api, db):
    from django.core.management import CommandError, call_command

    call_command("createexperiment", "by-node", "--feature-scaling", "node")
    with pytest.raises(CommandError, match="feature_scaling"):
        call_command("createexperiment", "bogus", "--feature-scaling", "pooled")
    assert Experiment.objects.get(name="by-node").feature_scaling == "node"
    assert not Experiment.objects.filter(name="bogus").exists()
    assert api.get("/api/features?experiment=by-node").json() == {
        "experiment": "by-node", "scaling": "node", "status": "collecting", "reported": 0, "required": 3}
