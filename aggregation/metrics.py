"""Prometheus metrics. Figures about the federation are read from the database at scrape time, so
every web process reports the same truth whatever process (web or worker) did the work; counters
of rejected uploads are per process, as Prometheus expects from a scraped process."""
import secrets
from collections.abc import Iterator
from typing import cast

from django.conf import settings
from django.db.models import Count, Max, Min, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from aggregation.models import Experiment, Round, Update
from fedsite.errors import error_response
from fedsite.readguard import signed_in

UPDATES_REJECTED = Counter(
    "fedsite_updates_rejected", "Uploads refused by this web process, by reason (the error code).", ["reason"]
)


class FederationCollector(Collector):
    def describe(self) -> list:
        # Without describe() the registry would call collect() (and query the database) at import.
        return []

    def collect(self) -> Iterator:
        rounds = CounterMetricFamily("fedsite_rounds", "Rounds that ended, by experiment and outcome.",
                                     labels=["experiment", "status"])
        open_rounds = GaugeMetricFamily("fedsite_rounds_in_progress", "Rounds open or aggregating.",
                                        labels=["experiment", "status"])
        for row in Round.objects.values("experiment__name", "status").annotate(n=Count("id")):
            family = rounds if row["status"] in (Round.Status.CLOSED, Round.Status.FAILED) else open_rounds
            family.add_metric([row["experiment__name"], row["status"]], row["n"])
        yield rounds
        yield open_rounds

        updates = CounterMetricFamily("fedsite_updates_accepted", "Updates accepted and stored.",
                                      labels=["experiment"])
        for accepted in Update.objects.values("round__experiment__name").annotate(n=Count("id")):
            updates.add_metric([accepted["round__experiment__name"]], accepted["n"])
        yield updates

        seconds = SummaryMetricFamily("fedsite_aggregation_seconds", "Time spent aggregating closed rounds.",
                                      labels=["experiment"])
        for experiment in Experiment.objects.all():
            values = [r for r in experiment.rounds.filter(status=Round.Status.CLOSED)
                      .values_list("metrics__aggregation_seconds", flat=True) if r is not None]
            seconds.add_metric([experiment.name], len(values), float(sum(values)))
        yield seconds

        versions = GaugeMetricFamily("fedsite_model_version", "Latest global model version.", labels=["experiment"])
        for latest in Experiment.objects.annotate(v=Max("versions__version")).values("name", "v"):
            versions.add_metric([latest["name"]], latest["v"] or 0)
        yield versions

        from nodes_app.models import Node

        by_status = {"online": 0, "stale": 0, "offline": 0, "done": 0}
        for node in Node.objects.only("last_seen", "discovery_alive", "done_at"):
            by_status[node.status] += 1
        nodes = GaugeMetricFamily("fedsite_nodes", "Known nodes by status.", labels=["status"])
        for status, count in by_status.items():
            nodes.add_metric([status], count)
        yield nodes

        # Queue lag: how long the oldest round has waited for its aggregation task, and how many
        # messages wait in the broker (scaled mode).
        oldest = Round.objects.filter(status=Round.Status.AGGREGATING).aggregate(t=Min("aggregation_requested_at"))
        lag = (timezone.now() - oldest["t"]).total_seconds() if oldest["t"] else 0.0
        yield GaugeMetricFamily("fedsite_aggregation_lag_seconds",
                                "Age of the oldest round waiting for its aggregation.", value=lag)
        depth = _queue_depth()
        if depth is not None:
            yield GaugeMetricFamily("fedsite_queue_messages", "Messages waiting in the Celery queue.", value=depth)
        total_bytes = Update.objects.aggregate(b=Sum("size"))["b"] or 0
        yield GaugeMetricFamily("fedsite_update_bytes_stored", "Bytes of update parameters stored.",
                                value=total_bytes)


def _queue_depth() -> int | None:
    if settings.FL_MODE != "scaled":
        return None
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        return int(cast(int, client.llen("celery")))  # a sync client: an int, never an awaitable
    except redis.RedisError:
        return None


_registered = False


def collector_register() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(FederationCollector())
        _registered = True


def rejection_count(response_data: object) -> None:
    reason = response_data.get("error", "unknown") if isinstance(response_data, dict) else "unknown"
    UPDATES_REJECTED.labels(reason).inc()


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; behind `Authorization: Bearer $FL_METRICS_TOKEN` (or a login) when that is set."""
    token = settings.FL_METRICS_TOKEN
    operator = signed_in(getattr(request, "user", None))
    given = request.META.get("HTTP_AUTHORIZATION", "").encode("utf-8", "surrogateescape")
    if token and not operator and not secrets.compare_digest(given, f"Bearer {token}".encode()):
        return error_response("bad_token", "Scraping /metrics needs 'Authorization: Bearer <FL_METRICS_TOKEN>'.", 401)
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
