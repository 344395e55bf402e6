"""Round metrics as CSV and JSON downloads: GET /api/rounds?format=csv|json."""
import csv
import io

import pytest

from aggregation.models import Round
from tests.conftest import params_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def one_closed_round(make_experiment, register, uploader):
    make_experiment(name="exp", total_nodes=2, min_nodes=2)
    for i, node in enumerate(("a", "b")):
        uploader(register(node), 1, params_for(i), 10 * (i + 1), metrics={"loss": 0.5 + i, "val_accuracy": 0.75})
    rnd = Round.objects.get(number=1)
    rnd.metrics = {**rnd.metrics, "test_accuracy": 0.5, "=cmd()": 1.0}  # a metric name a spreadsheet would run
    rnd.save(update_fields=["metrics"])


def test_the_round_metrics_download_as_csv_one_row_per_round_one_column_per_metric(api, one_closed_round):
    response = api.get("/api/rounds?experiment=exp&format=csv")

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="exp-rounds.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    history = api.get("/api/rounds?experiment=exp").json()["rounds"]
    assert [row["number"] for row in rows] == ["1", "2"] and [row["status"] for row in rows] == ["closed", "open"]
    first = rows[0]
    assert float(first["loss"]) == pytest.approx(history[0]["metrics"]["loss"])
    assert float(first["test_accuracy"]) == 0.5 and float(first["val_accuracy"]) == 0.75
    assert (first["model_version"], first["updates"], rows[1]["model_version"], rows[1]["loss"]) == ("1", "2", "", "")
    assert first["'=cmd()"] == "1.0" and "=cmd()" not in first
    assert (set(history[0]["metrics"]) - {"=cmd()"}) | {"'=cmd()"} <= set(first)


def test_the_round_metrics_download_as_json_with_the_same_shape_as_the_api(api, one_closed_round):
    plain = api.get("/api/rounds?experiment=exp")
    download = api.get("/api/rounds?experiment=exp&format=json")

    assert download.status_code == 200 and download.json() == plain.json()
    assert download["Content-Disposition"] == 'attachment; filename="exp-rounds.json"'
    assert "Content-Disposition" not in plain


def test_an_unknown_export_format_is_refused_with_a_sentence(api, one_closed_round):
    response = api.get("/api/rounds?experiment=exp&format=xlsx")

    assert response.status_code == 400 and response.json()["error"] == "bad_format"
    assert "json or csv" in response.json()["detail"]
