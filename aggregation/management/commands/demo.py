"""`python manage.py demo`: a whole federation on this machine, embedded mode, no services.

Starts the server and N nodes as separate processes (exactly what a user would run by hand); the nodes
hold a non-IID split of scikit-learn's digits and train a classifier together. Prints the accuracy of
every round as it closes and leaves the dashboard running.
"""
import argparse
import json
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
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test.utils import override_settings

DEMO_EXPERIMENT = "digits-demo"


class Command(BaseCommand):
    help = ("Run a demo federation: a server and N nodes on loopback training a digits classifier on a non-IID "
            "split, printing the accuracy per round.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--nodes", type=int, default=3)
        parser.add_argument("--rounds", type=int, default=10)
        parser.add_argument("--partition", default="dirichlet:0.5",
                            help="How the digits are split between the nodes: iid, dirichlet:ALPHA or shards:K.")
        parser.add_argument("--stop-when", default="", help="Early stop, e.g. test_accuracy>=0.95 (default none).")
        parser.add_argument("--patience", type=int, default=1, help="Rounds in a row --stop-when must hold.")
        parser.add_argument("--strategy", default=os.environ.get("FL_STRATEGY") or "fedavg",
                            help="Aggregation strategy (default FL_STRATEGY, else fedavg).")
        parser.add_argument("--strategy-params", default=os.environ.get("FL_STRATEGY_PARAMS") or "{}",
                            help='Its hyperparameters as JSON, e.g. \'{"eta": 0.05}\' (default FL_STRATEGY_PARAMS).')
        parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)  # internal: see _prepare
        parser.add_argument("--port", type=int, default=5000)
        parser.add_argument("--dir", default=str(Path(settings.BASE_DIR) / "var" / "demo"),
                            help="Where the demo keeps its database and logs (wiped at start).")
        parser.add_argument("--exit", action="store_true", help="Stop everything when the last round closes.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["nodes"] < 1 or options["rounds"] < 1:
            raise CommandError("--nodes and --rounds must be at least 1")
        if options["stop_when"]:
            from aggregation.fl.metrics import stop_condition_parse

            try:
                stop_condition_parse(options["stop_when"])
            except ValueError as exc:
                raise CommandError(f"--stop-when: {exc}") from None
        if not options["prepare"]:
            self._refuse_environment()
        strategy_params = _strategy_checked(options["strategy"], options["strategy_params"])
        if options["prepare"]:
            self._prepare(options, strategy_params)
            return
        workdir = Path(options["dir"])
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        url = f"http://127.0.0.1:{options['port']}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FL_", "DATABASE_URL", "REDIS_URL"))},
            "DEBUG": "1", "FL_DATA_DIR": str(workdir), "TOTAL_NODES": str(options["nodes"]),
            "FL_MIN_NODES": str(options["nodes"]), "FL_MAX_ROUNDS": str(options["rounds"]),
            "FL_ROUND_TIMEOUT_S": "120", "FL_ENROLLMENT_TOKEN": secrets.token_urlsafe(16),
            "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "fedsite.settings", "FL_EXPERIMENT": DEMO_EXPERIMENT,
        }
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        # The demo's experiment is created in the demo's own database, by this command in a child process.
        subprocess.run([*manage, "demo", "--prepare", "--nodes", str(options["nodes"]), "--rounds",
                        str(options["rounds"]), "--stop-when", options["stop_when"], "--patience",
                        str(options["patience"]), "--strategy", options["strategy"], "--strategy-params",
                        options["strategy_params"]], env={**env, "LOG_LEVEL": "WARNING"}, check=True)
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
                                       "--state-dir", str(workdir / f"node-{node}"), "--data", "digits",
                                       "--partition", options["partition"], "--num-partitions", str(options["nodes"]),
                                       "--partition-id", str(node - 1), "--seed", "0"])
            self.stdout.write(f"dashboard: {url}/   (logs in {workdir})")
            params = f" {json.dumps(strategy_params)}" if strategy_params else ""
            self.stdout.write(f"{options['nodes']} nodes hold a {options['partition']} split of digits and train with "
                              f"{options['strategy']}{params}; the server scores every new model on the 20% of "
                              "digits no node holds")
            self._show_split(options["nodes"], options["partition"])
            self._follow(url, options["rounds"], options["nodes"])
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

    def _refuse_environment(self) -> None:
        """The demo configures its own server and nodes: say which FL_ variables it leaves unused, rather than
        let `FL_EPOCHS=10 make demo` look as if it had worked."""
        honoured = {"FL_STRATEGY", "FL_STRATEGY_PARAMS"}
        ignored = sorted(k for k in os.environ if k.startswith(("FL_", "DATABASE_URL", "REDIS_URL"))
                         and k not in honoured)
        if ignored:
            self.stderr.write(f"the demo ignores {', '.join(ignored)}: it runs its own embedded server and nodes and "
                              "takes only FL_STRATEGY and FL_STRATEGY_PARAMS (or its options: see --help); for a "
                              "configured run use `make run` and `manage.py runnode`")

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

    def _follow(self, url: str, rounds: int, nodes: int) -> None:
        shown: set[int] = set()
        started = time.monotonic()
        registered = -1
        paused = False
        while True:
            # Status first: once it says finished, the history read after it holds the last round too.
            status = requests.get(f"{url}/status", timeout=10).json()
            history = requests.get(f"{url}/api/rounds", timeout=10).json()["rounds"]
            if not shown and registered < nodes:  # round 1 waits for the nodes to start (seconds on a busy box)
                count = len(requests.get(f"{url}/api/nodes", timeout=10).json())
                if count != registered:
                    registered = count
                    self.stdout.write(f"waiting for nodes: {count} of {nodes} registered")
            for entry in history:
                if entry["status"] in ("closed", "failed") and entry["number"] not in shown:
                    shown.add(entry["number"])
                    self.stdout.write(_round_line(entry))
            if status.get("run_status") in ("finished", "stopped"):
                if status["run_status"] == "stopped":
                    self.stdout.write("the run was stopped by an operator")
                return
            if (status.get("run_status") == "paused") != paused:
                paused = not paused
                self.stdout.write("the run was paused by an operator; waiting for it to resume" if paused
                                  else "the run was resumed")
            if paused:
                started = time.monotonic()  # a pause is not a lack of progress
            elif time.monotonic() - started > 120 * rounds:
                raise CommandError("the demo made no progress; see the logs")
            time.sleep(0.5)

    def _show_split(self, nodes: int, partition: str) -> None:
        """How many of each digit every node holds (the same split the nodes load), to make the skew visible."""
        import numpy as np

        from aggregation.datasets import nodes_data_load

        for number, data in enumerate(nodes_data_load("digits", partitioning=partition, num_partitions=nodes), 1):
            counts = np.bincount(np.r_[data.y_train, data.y_val].astype(int), minlength=10)
            self.stdout.write(f"  node {number}: {counts.sum():4d} digits, per class 0-9: "
                              + " ".join(f"{c:3d}" for c in counts))

    def _prepare(self, options: dict[str, Any], strategy_params: dict[str, Any]) -> None:
        """In the demo's database: migrate, then create the digits experiment the server will serve."""
        from aggregation.fl.metrics import stop_condition_parse
        from aggregation.fl.model import MLPSpec
        from aggregation.services.experiments import experiment_create

        stop = stop_condition_parse(options["stop_when"]) if options["stop_when"] else ("", ">=", None)
        # Without the default experiment from the environment: the demo's is created just below, under its name.
        with override_settings(FL_CREATE_DEFAULT_EXPERIMENT=False):
            call_command("migrate", verbosity=0)
        experiment_create(
            name=settings.FL_EXPERIMENT, model_spec=MLPSpec((64, 32, 10), "classification").to_dict(),
            strategy=options["strategy"], strategy_params=strategy_params, total_nodes=options["nodes"],
            min_nodes=options["nodes"], round_timeout_s=120.0,
            max_rounds=options["rounds"], epochs=5, learning_rate=0.1, batch_size=32, seed=0, server_eval="digits",
            stop_metric=stop[0], stop_op=stop[1], stop_threshold=stop[2], stop_patience=options["patience"],
        )


def _strategy_checked(name: str, params_json: str) -> dict[str, Any]:
    """The strategy's hyperparameters, or a CommandError saying what is wrong with the strategy or them."""
    from aggregation.fl.registry import strategy_create

    try:
        params = json.loads(params_json)
        strategy_create(name, params)
    except ValueError as exc:
        raise CommandError(f"--strategy {name} --strategy-params {params_json}: {exc}") from None
    return params


def _round_line(entry: dict[str, Any]) -> str:
    metrics = entry["metrics"]
    shown = [(label, metrics.get(key)) for label, key in (
        ("training loss", "loss"), ("validation accuracy", "val_accuracy"), ("test accuracy", "test_accuracy"))]
    return (f"round {entry['number']}: {entry['status']}, {entry['updates']} updates, "
            + "".join(f"{label} {value:.4f}, " for label, value in shown if isinstance(value, (int, float)))
            + (f"model v{entry['model_version']}, " if entry["model_version"] is not None else "")
            + f"{entry['duration_s']:.2f} s" + (" (stopped early)" if metrics.get("stopped_early") else ""))
