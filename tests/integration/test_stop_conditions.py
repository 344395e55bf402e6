"""Stop conditions end a run early and say so in the round history; the server scores new models on its test set."""
import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from aggregation.datasets import csv_load, dataset_load, server_testset_load, standardizer_fit
from aggregation.fl.aggregate import weighted_average
from aggregation.fl.features import Scaling
from aggregation.fl.metrics import evaluate
from aggregation.fl.model import MLPSpec, init_parameters, loss
from aggregation.models import Experiment, Round
from aggregation.services.evaluation import experiment_learning_defaults
from fedsite.errors import ApplicationError
from tests.conftest import params_for

pytestmark = pytest.mark.django_db(transaction=True)


def run_rounds(make_experiment, register, uploader, values, metric="val_accuracy", **fields):
    """One node, one update per round carrying `metric` = each of `values`; returns the experiment."""
    experiment = make_experiment(total_nodes=1, min_nodes=1, max_rounds=20, stop_metric=metric, **fields)
    token = register("1")
    for number, value in enumerate(values, start=1):
        response = uploader(token, number, params_for(number), metrics={"loss": 1.0, metric: value})
        assert response.status_code == 201, response.content
    experiment.refresh_from_db()
    return experiment


def test_a_stop_condition_ends_the_run_early_and_the_round_history_shows_it(make_experiment, register, uploader,
                                                                           api):
    # Execute: accuracy 0.5, 0.96, 0.97 with "val_accuracy >= 0.95 for 2 rounds"
    experiment = run_rounds(make_experiment, register, uploader, [0.5, 0.96, 0.97], stop_threshold=0.95,
                            stop_patience=2)

    # Assert: finished after round 3 of at most 20, with the reason, and no round 4 opened
    assert experiment.status == Experiment.Status.FINISHED
    assert experiment.finish_reason == "stopped early at round 3: val_accuracy >= 0.95 for 2 rounds in a row"
    assert list(experiment.rounds.values_list("number", "status")) == [(1, "closed"), (2, "closed"), (3, "closed")]
    history = api.get("/api/rounds?experiment=exp").json()["rounds"]
    assert [r["metrics"].get("stopped_early") for r in history] == [None, None, True]
    assert api.get("/api/rounds/current?experiment=exp").json()["run"]["status"] == "finished"


def test_a_broken_streak_starts_again(make_experiment, register, uploader):
    # Execute
    experiment = run_rounds(make_experiment, register, uploader, [0.96, 0.5, 0.96], stop_threshold=0.95,
                            stop_patience=2)

    # Assert: never two rounds in a row, so the run goes on with round 4 open
    assert experiment.status == Experiment.Status.RUNNING
    assert Round.objects.get(experiment=experiment, number=4).status == Round.Status.OPEN


def test_a_loss_condition_stops_when_the_loss_is_at_most_the_threshold(make_experiment, register, uploader):
    # Execute
    experiment = run_rounds(make_experiment, register, uploader, [0.4, 0.2, 0.05], metric="val_loss",
                            stop_op="<=", stop_threshold=0.1)

    # Assert
    assert experiment.status == Experiment.Status.FINISHED
    assert experiment.finish_reason == "stopped early at round 3: val_loss <= 0.1"


def test_without_a_stop_condition_max_rounds_finishes_the_run_and_says_so(make_experiment, register, uploader):
    # Execute
    experiment = make_experiment(total_nodes=1, min_nodes=1, max_rounds=2)
    token = register("1")
    for number in (1, 2):
        uploader(token, number, params_for(number), metrics={"val_accuracy": 1.0})
    experiment.refresh_from_db()

    # Assert
    assert experiment.status == Experiment.Status.FINISHED and experiment.finish_reason == "max_rounds reached (2)"
    assert "stopped_early" not in Round.objects.get(experiment=experiment, number=2).metrics


def fixed_scaling(x: np.ndarray) -> dict:
    """An experiment's feature_stats as the nodes' reports would have fixed it (here: from `x`'s statistics)."""
    mean, std = standardizer_fit(x)
    return {"shift": mean.tolist(), "scale": std.tolist(), "nodes": 2, "count": len(x)}


def test_the_server_scores_every_new_model_on_its_digits_test_set(make_experiment, register, uploader):
    # Prepare: a digits classifier, the nodes' combined scaling (from the whole set: not the test rows' own
    # statistics) and two nodes' updates
    spec = MLPSpec((64, 8, 10), "classification")
    stats = fixed_scaling(dataset_load("digits").x)
    experiment = make_experiment(model_spec=spec.to_dict(), total_nodes=2, min_nodes=2, server_eval="digits",
                                 stop_metric="test_accuracy", stop_threshold=0.99, feature_stats=stats)
    updates = [(init_parameters(spec, 20 + i), n) for i, n in enumerate([10, 30])]

    # Execute
    for i, (params, n) in enumerate(updates):
        assert uploader(register(str(i)), 1, params, n, binary=False).status_code == 201

    # Assert: the round's test metrics are the aggregated model's scores on the held-out digits
    metrics = Round.objects.get(experiment=experiment, number=1).metrics
    test = server_testset_load("digits")
    expected = evaluate(spec, weighted_average(updates), Scaling.from_dict(stats).apply(test.x), test.y)
    own = evaluate(spec, weighted_average(updates), Scaling(*standardizer_fit(test.x)).apply(test.x), test.y)
    assert metrics["test_accuracy"] == pytest.approx(expected["accuracy"])
    assert metrics["test_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert metrics["test_examples"] == len(test)
    assert metrics["test_loss"] != pytest.approx(own["loss"], rel=1e-3)  # not the test set's own statistics
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.RUNNING  # 0.99 not reached


def test_the_server_scores_a_regression_on_a_csv_test_set_it_owns(make_experiment, register, uploader, tmp_path):
    # Prepare: 10 features, as the default model takes
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 10))
    path = tmp_path / "test.csv"
    path.write_text(",".join([f"f{i}" for i in range(10)] + ["y"]) + "\n"
                    + "\n".join(",".join(f"{v:.5f}" for v in [*row, row[:3].sum()]) for row in x) + "\n")
    stats = fixed_scaling(x[:20] * 2 + 1)
    experiment = make_experiment(total_nodes=1, min_nodes=1, server_eval=f"csv:{path}", server_eval_target="y",
                                 feature_stats=stats)

    # Execute
    uploader(register("1"), 1, params_for(3), binary=False)

    # Assert: the test loss is ½·MSE on the file, scaled with the nodes' combined statistics
    ds = csv_load(path, "y")
    expected = loss(MLPSpec(), params_for(3), Scaling.from_dict(stats).apply(ds.x), ds.y.astype(np.float32))
    metrics = Round.objects.get(experiment=experiment, number=1).metrics
    assert metrics["test_loss"] == pytest.approx(expected, rel=1e-5) and "test_accuracy" not in metrics


def test_a_test_set_that_cannot_be_used_is_logged_and_never_stops_the_round(make_experiment, register, uploader,
                                                                          caplog, tmp_path):
    # Prepare: the digits have 64 features, the default model takes 10
    experiment = make_experiment(total_nodes=1, min_nodes=1, server_eval="digits")

    # Execute
    uploader(register("1"), 1, params_for(1))

    # Assert
    rnd = Round.objects.get(experiment=experiment, number=1)
    assert rnd.status == Round.Status.CLOSED and "test_loss" not in rnd.metrics
    assert "server evaluation on digits skipped: it has 64 features, the model takes 10" in caplog.text


@override_settings(FL_STOP_WHEN="test_accuracy>=0.95", FL_STOP_PATIENCE=3, FL_SERVER_EVAL="digits",
                   FL_SERVER_EVAL_TARGET="")
def test_the_default_experiments_learning_fields_come_from_the_settings():
    assert experiment_learning_defaults() == {
        "server_eval": "digits", "server_eval_target": "", "stop_patience": 3,
        "stop_metric": "test_accuracy", "stop_op": ">=", "stop_threshold": 0.95,
    }
    with override_settings(FL_STOP_WHEN="accuracy=0.9"), pytest.raises(ApplicationError, match="FL_STOP_WHEN"):
        experiment_learning_defaults()


def test_the_admin_refuses_a_stop_metric_without_threshold_and_an_unknown_test_set(experiment):
    experiment.stop_metric, experiment.server_eval = "val_accuracy", "mnist"
    with pytest.raises(ValidationError) as caught:
        experiment.clean()
    assert set(caught.value.message_dict) == {"stop_threshold", "server_eval"}
