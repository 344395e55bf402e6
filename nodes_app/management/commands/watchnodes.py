"""`python manage.py watchnodes`: keep Node rows in step with etcd and register this server there.
Scaled mode: run one beside the web and worker processes (a second is harmless, only redundant)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from fedsite.errors import ApplicationError
from nodes_app import discovery
from nodes_app.discovery_services import server_discovery_jobs

logger = logging.getLogger("fedsite.discovery")


class Command(BaseCommand):
    help = ("Watch /fedlearn/nodes/ in etcd (ETCD_ENDPOINTS): nodes that appear are known, nodes whose lease "
            "expires turn offline. Also registers /fedlearn/server = --public-url (FL_PUBLIC_URL) on a lease.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--public-url", default=settings.FL_PUBLIC_URL,
                            help="This server's URL for nodes started without SERVER_ADDR (env FL_PUBLIC_URL); "
                                 "empty: do not register the server.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            endpoints = discovery.endpoints_parse(settings.ETCD_ENDPOINTS)
        except ValueError as exc:
            raise CommandError(f"ETCD_ENDPOINTS: {exc}") from None
        if not endpoints:
            raise CommandError("ETCD_ENDPOINTS is not set: etcd discovery is off, so there is nothing to watch.")
        try:
            jobs = server_discovery_jobs(endpoints, options["public_url"], settings.FL_ETCD_TTL_S)
        except ApplicationError as exc:
            raise CommandError(f"--public-url: {exc.detail}") from None
        logger.info("watching %s in etcd at %s%s", discovery.NODES_PREFIX, ", ".join(map(str, endpoints)),
                    f"; registering {discovery.SERVER_KEY} = {options['public_url']}" if options["public_url"] else "")
        asyncio.run(self._run(jobs))

    async def _run(self, jobs: list[discovery.Job]) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await discovery.jobs_run(jobs, stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
