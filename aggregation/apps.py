import threading
from typing import Any

from django.apps import AppConfig
from django.core.signals import request_started
from django.db.models.signals import post_migrate

_COLLECTOR_UID = "aggregation.metrics.collector"
_collector_lock = threading.Lock()  # the first requests may arrive on several threads at once


class AggregationConfig(AppConfig):
    name = "aggregation"
    verbose_name = "Federated learning"

    def ready(self) -> None:
        from aggregation.signals import create_default_experiment

        post_migrate.connect(create_default_experiment, sender=self)
        # The Prometheus collector matters only where Django serves requests (/metrics): registering it on the
        # first request keeps prometheus_client and DRF out of processes that serve none, such as runnode.
        request_started.connect(_collector_register, dispatch_uid=_COLLECTOR_UID)


def _collector_register(**kwargs: Any) -> None:
    """Register the federation's metrics collector once, then stop listening."""
    from aggregation.metrics import collector_register

    with _collector_lock:
        collector_register()
    request_started.disconnect(dispatch_uid=_COLLECTOR_UID)
