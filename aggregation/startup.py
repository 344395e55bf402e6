"""What a server process does once at start: make sure the default experiment exists and, in the
embedded mode, run the round sweeper in a thread (eager Celery cannot schedule deadlines)."""
import logging
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from fedsite.errors import ApplicationError

logger = logging.getLogger("fedsite.startup")

_started = threading.Event()


def sweeper_loop(stop: threading.Event, interval: float) -> None:
    from aggregation.services.sweep import rounds_sweep

    last_error = ""
    while not stop.is_set():
        close_old_connections()
        try:
            rounds_sweep()
            if last_error:
                logger.info("round sweeper recovered")
                last_error = ""
        except Exception as exc:  # keep sweeping; say each distinct failure once, not every tick
            if str(exc) != last_error:
                logger.exception("round sweeper failed: %s", exc)
                last_error = str(exc)
        stop.wait(interval)
    close_old_connections()


def discovery_start() -> None:
    """Register this server in etcd (FL_PUBLIC_URL) and, in the embedded mode, mirror the nodes' keys.

    The scaled mode runs `manage.py watchnodes` as its own process for the latter.
    """
    if not settings.ETCD_ENDPOINTS:
        logger.info("etcd discovery is off (ETCD_ENDPOINTS is not set)")
        return
    from nodes_app.discovery import DiscoveryThread, endpoints_parse
    from nodes_app.discovery_services import server_discovery_jobs

    try:
        jobs = server_discovery_jobs(endpoints_parse(settings.ETCD_ENDPOINTS), settings.FL_PUBLIC_URL,
                                     settings.FL_ETCD_TTL_S, watch=settings.FL_MODE == "embedded")
    except (ValueError, ApplicationError) as exc:
        logger.error("etcd discovery is off: %s", exc)
        return
    if jobs:
        DiscoveryThread("fedsite-etcd", jobs).start()


def server_started() -> None:
    if _started.is_set():
        return
    _started.set()
    from aggregation.services.experiments import experiment_default_get_or_create

    if settings.FL_CREATE_DEFAULT_EXPERIMENT:
        try:
            experiment = experiment_default_get_or_create()
            logger.info("serving experiment %s in %s mode", experiment.name, settings.FL_MODE)
        except DatabaseError as exc:
            logger.error("the database is not ready (%s); run 'python manage.py migrate'", exc)
        finally:
            close_old_connections()
    discovery_start()
    if settings.FL_MODE == "embedded" and settings.FL_EMBEDDED_SWEEPER:
        thread = threading.Thread(
            target=sweeper_loop, args=(threading.Event(), settings.FL_SWEEP_INTERVAL_S),
            name="fedsite-sweeper", daemon=True,
        )
        thread.start()
