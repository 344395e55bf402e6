"""`runserver`: HTTP and websockets through fedsite.asgi, served by uvicorn (httptools, uvloop).

The same command in every mode: `make run`, `make demo`, the e2e tests and production
(`python manage.py runserver --noreload 0.0.0.0:5000`; several processes behind a proxy in the scaled
mode). It replaces daphne's runserver: benchmarks/webserver.py measured uvicorn faster per request and
able to refuse a body at its headers, which daphne (it buffers every body before the application runs)
cannot. fedsite/webserver.py and fedsite/httpprotocol.py hold the limits and timeouts; Django's autoreloader
restarts it on code changes unless --noreload.
"""
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.management.commands.runserver import Command as DjangoRunserverCommand
from django.utils import autoreload


class Command(DjangoRunserverCommand):
    help = "Serve the API, admin, dashboard and websockets with uvicorn (ASGI)."
    # Set by Django's runserver handle() before inner_run; its stubs do not declare them.
    addr: str
    port: str
    use_ipv6: bool

    def inner_run(self, *args: Any, **options: Any) -> None:
        import uvicorn

        from fedsite.httpprotocol import uvicorn_config

        autoreload.raise_last_exception()
        if not options["skip_checks"]:
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        host = f"[{self.addr}]" if self.use_ipv6 else self.addr
        self.stdout.write(
            f"{datetime.now():%B %d, %Y - %X}\n"
            f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"fedsite (uvicorn, ASGI) at http://{host}:{self.port}/, listen backlog "
            f"{settings.FL_LISTEN_BACKLOG}\nQuit the server with CONTROL-C.",
        )
        self.stdout.flush()
        from fedsite.asgi import application  # before the event loop: importing it sets up the default experiment

        uvicorn.Server(uvicorn_config(application, self.addr, int(self.port))).run()
