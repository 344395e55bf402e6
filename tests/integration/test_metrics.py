"""/metrics speaks Prometheus and counts what happened, whichever process did it."""
import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import params_for

pytestmark = pytest.mark.django_db(transaction=True)


def _samples(api) -> dict[tuple, float]:
    response = api.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


def test_metrics_count_rounds_updates_nodes_and_rejections(api, experiment, register, uploader):
    tokens = [register(str(i)) for i in range(3)]
    for token in tokens:
        uploader(token, 1, params_for(1))
    before = _samples(api).get(("fedsite_updates_rejected_total", (("reason", "round_closed"),)), 0)
    uploader(tokens[0], 1, params_for(2))

    samples = _samples(api)

    assert samples[("fedsite_rounds_total", (("experiment", "exp"), ("status", "closed")))] == 1
    assert samples[("fedsite_rounds_in_progress", (("experiment", "exp"), ("status", "open")))] == 1
    assert samples[("fedsite_updates_accepted_total", (("experiment", "exp"),))] == 3
    assert samples[("fedsite_nodes", (("status", "online"),))] == 3
    assert samples[("fedsite_model_version", (("experiment", "exp"),))] == 1
    assert samples[("fedsite_aggregation_seconds_count", (("experiment", "exp"),))] == 1
    assert samples[("fedsite_aggregation_lag_seconds", ())] == 0
    assert samples[("fedsite_updates_rejected_total", (("reason", "duplicate_update"),))] >= 1
    assert before == samples.get(("fedsite_updates_rejected_total", (("reason", "round_closed"),)), 0)


@override_settings(FL_METRICS_TOKEN="scrape-secret")
def test_metrics_can_require_a_token(api):
    assert api.get("/metrics").status_code == 401
    assert api.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200


def test_metrics_count_done_nodes_apart(api, experiment, register):
    from aggregation.services.lifecycle import experiment_stop

    tokens = [register(str(i)) for i in range(3)]
    experiment_stop(experiment)
    api.post("/api/nodes/done?experiment=exp", HTTP_AUTHORIZATION=f"Bearer {tokens[0]}")

    samples = _samples(api)

    assert samples[("fedsite_nodes", (("status", "done"),))] == 1
    assert samples[("fedsite_nodes", (("status", "online"),))] == 2
