"""`python manage.py demo`: a whole federation on this machine, embedded mode, no services.

Starts the server and N nodes as separate processes (exactly what a user would run by hand),
prints the loss of every round as it closes and leaves the dashboard running.
"""
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Run a demo federation: a server and N nodes on loopback, printing the loss per round."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--nodes", type=int, default=3)
        parser.add_argument("--rounds", type=int, default=5)
        parser.add_argument("--port", type=int, default=5000)
        parser.add_argument("--dir", default=str(Path(settings.BASE_DIR) / "var" / "demo"),
                            help="Where the demo keeps its database and logs (wiped at start).")
        parser.add_argument("--exit", action="store_true", help="Stop everything when the last round closes.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["nodes"] < 1 or options["rounds"] < 1:
            raise CommandError("--nodes and --rounds must be at least 1")
        workdir = Path(options["dir"])
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        url = f"http://127.0.0.1:{options['port']}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FL_", "DATABASE_URL", "REDIS_URL"))},
            "DEBUG": "1", "FL_DATA_DIR": str(workdir), "TOTAL_NODES": str(options["nodes"]),
            "FL_MIN_NODES": str(options["nodes"]), "FL_MAX_ROUNDS": str(options["rounds"]),
            "FL_ROUND_TIMEOUT_S": "120", "FL_ENROLLMENT_TOKEN": secrets.token_urlsafe(16),
            "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "fedsite.settings",
        }
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
        procs: list[subprocess.Popen] = []

        def spawn(name: str, argv: list[str]) -> None:
            log = (workdir / f"{name}.log").open("wb")
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))

        spawn("server", [*manage, "runserver", "--noreload", f"127.0.0.1:{options['port']}"])
        try:
            self._wait_for_server(url, procs[0], workdir)
            for node in range(1, options["nodes"] + 1):
                spawn(f"node-{node}", [*manage, "runnode", "--id", str(node), "--server", url, "--port", "0",
                                       "--state-dir", str(workdir / f"node-{node}")])
            self.stdout.write(f"dashboard: {url}/   (logs in {workdir})")
            self._follow(url, options["rounds"])
            self.stdout.write(self.style.SUCCESS(f"run finished. dashboard: {url}/"))
            if not options["exit"]:
                self.stdout.write("the server keeps running for the dashboard; press Ctrl-C to stop")
                procs[0].wait()
        except KeyboardInterrupt:
            self.stdout.write("stopping")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def _wait_for_server(self, url: str, server: subprocess.Popen, workdir: Path) -> None:
        for _ in range(300):
            if server.poll() is not None:
                raise CommandError(f"the server exited; see {workdir / 'server.log'} (is the port in use? try --port)")
            try:
                requests.get(f"{url}/status", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.2)
        raise CommandError(f"the server did not answer at {url}; see {workdir / 'server.log'}")

    def _follow(self, url: str, rounds: int) -> None:
        shown: set[int] = set()
        started = time.monotonic()
        while True:
            history = requests.get(f"{url}/api/rounds", timeout=10).json()["rounds"]
            for entry in history:
                if entry["status"] in ("closed", "failed") and entry["number"] not in shown:
                    shown.add(entry["number"])
                    loss = entry["metrics"].get("loss")
                    self.stdout.write(
                        f"round {entry['number']}: {entry['status']}, {entry['updates']} updates, "
                        + (f"weighted training loss {loss:.5f}, " if loss is not None else "")
                        + (f"model v{entry['model_version']}, " if entry["model_version"] is not None else "")
                        + f"{entry['duration_s']:.2f} s"
                    )
            if requests.get(f"{url}/status", timeout=10).json().get("run_status") == "finished":
                return
            if time.monotonic() - started > 120 * rounds:
                raise CommandError("the demo made no progress; see the logs")
            time.sleep(0.5)
