"""`python manage.py simulate`: N virtual nodes on this machine through the real round lifecycle, for sweeps."""
import json
import logging
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError

from aggregation.datasets import BUILTIN, DataError
from aggregation.fl.compression import ENCODINGS
from aggregation.fl.features import SCALINGS
from aggregation.fl.metrics import stop_condition_parse
from aggregation.fl.registry import STRATEGIES
from aggregation.models import Round
from aggregation.simulation import MAX_NODES, SYNTHETIC, Simulation, SimulationConfig
from fedsite.errors import ApplicationError

COLUMNS = ("loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
BAR = 30


class Command(BaseCommand):
    help = ("Simulate a federation: N virtual nodes train with the node's code and submit through the same services "
            "as real uploads; prints a progress bar and a table of every round.")
    # The system checks import the URLconf and with it every view, DRF and the schema generator: a third of a
    # sweep's start-up, for a command that serves no URL (`manage.py check` still runs them).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add = parser.add_argument
        add("--nodes", type=int, default=10, help=f"Virtual nodes, 1..{MAX_NODES} (default 10).")
        add("--rounds", type=int, default=20, help="Rounds at most (max_rounds; default 20).")
        add("--data", default="digits", help=f"{'|'.join(BUILTIN)}|csv:PATH|{SYNTHETIC} (default digits).")
        add("--target", default=None, help="CSV only: the label column (default: the last).")
        add("--task", choices=("regression", "classification"), default=None,
            help="CSV only: what the target is (default regression).")
        add("--partition", default="iid", help="iid | dirichlet:ALPHA | shards:K (default iid).")
        add("--seed", type=int, default=0, help="Partition and initial-model seed (default 0).")
        add("--strategy", default="fedavg", choices=sorted(STRATEGIES), help="Aggregation strategy (default fedavg).")
        add("--strategy-params", default="{}", help="Strategy hyperparameters as JSON.")
        add("--hidden", default="32", help="Hidden layer sizes, comma-separated; '' for none (default 32).")
        add("--epochs", type=int, default=5)
        add("--learning-rate", type=float, default=0.1)
        add("--batch-size", type=int, default=32, help="0 = full batch (default 32).")
        add("--val-fraction", type=float, default=0.2, help="Each node's validation share (default 0.2).")
        add("--scaling", choices=SCALINGS, default="global",
            help="Feature scaling: global (federated statistics before round 1), node (each node its own) or range "
                 "(the data set's fixed range); default global.")
        add("--server-eval", default="auto",
            help="Server test set: auto (a bundled set's held-out rows), none, or a data source.")
        add("--stop-when", default="", help="Early stop, e.g. test_accuracy>=0.95 or val_accuracy>=0.95.")
        add("--patience", type=int, default=1, help="Rounds in a row --stop-when must hold (default 1).")
        add("--name", default="", help="Experiment name (default sim-<data>-<partition>-<strategy>-<random>).")
        add("--workers", type=int, default=1, help="Processes that train the virtual nodes (default 1).")
        add("--update-encoding", choices=ENCODINGS, default="none",
            help="How the virtual nodes compress their uploads: none (float32), fp16 or int8 (default none).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] < 2:
            # One log line per update would bury the progress bar; -v 2 shows them.
            for name in ("fedsite", "celery"):
                logging.getLogger(name).setLevel(logging.WARNING)
        config = self._config(options)
        try:
            sim = Simulation(config)
        except (DataError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        try:
            experiment = sim.setup()
        except ApplicationError as exc:
            raise CommandError(exc.detail) from None
        except IntegrityError:
            raise CommandError(f"an experiment named {config.name!r} already exists; choose another --name") from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"experiment {experiment.name}: {config.nodes} nodes, {config.data} {config.partition}, "
                          f"{config.strategy}, model {sim.spec.to_dict()}, uploads {config.update_encoding}, "
                          f"features scaled {config.scaling if config.data != SYNTHETIC else 'as generated'}")
        rows: list[tuple[Round, float]] = []
        try:
            while not sim.finished and len(rows) < config.rounds:
                started, done = time.monotonic(), len(rows)
                rnd = sim.step(on_submit=lambda k, done=done: self._uploads(done, config.rounds, k, config.nodes))  # type: ignore[misc]  # a lambda's default argument
                rows.append((rnd, time.monotonic() - started))
                self._progress(len(rows), config.rounds, rnd)
                if rnd.status not in (Round.Status.CLOSED, Round.Status.FAILED):
                    raise CommandError(f"round {rnd.number} is still {rnd.status}; is a Celery worker running?")
        finally:
            sim.close()
        if self.stdout.isatty():
            self.stdout.write("")
        self._wire(sim)
        self._table(rows)
        experiment.refresh_from_db()
        self.stdout.write(f"{experiment.name}: {experiment.status}"
                          + (f" ({experiment.finish_reason})" if experiment.finish_reason else ""))

    def _config(self, options: dict[str, Any]) -> SimulationConfig:
        try:
            hidden = tuple(int(v) for v in options["hidden"].split(",") if v.strip())
            strategy_params = json.loads(options["strategy_params"])
            stop = stop_condition_parse(options["stop_when"]) if options["stop_when"] else ("", ">=", None)
        except ValueError as exc:
            raise CommandError(f"bad option: {exc}") from None
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        return SimulationConfig(
            nodes=options["nodes"], rounds=options["rounds"], data=options["data"], target=options["target"],
            task=options["task"], partition=options["partition"], seed=options["seed"],
            strategy=options["strategy"], strategy_params=strategy_params, hidden=hidden, epochs=options["epochs"],
            learning_rate=options["learning_rate"], batch_size=options["batch_size"],
            val_fraction=options["val_fraction"], server_eval=options["server_eval"], stop_metric=stop[0],
            stop_op=stop[1], stop_threshold=stop[2], stop_patience=options["patience"], name=options["name"],
            workers=options["workers"], update_encoding=options["update_encoding"], scaling=options["scaling"],
        )

    def _wire(self, sim: Simulation) -> None:
        """What the virtual nodes sent: safetensors bodies as a real node would upload them."""
        if sim.uploads:
            per_param = sim.uploaded_bytes / sim.uploads / sim.spec.num_params()
            self.stdout.write(f"uploads: {sim.uploads} bodies, {sim.uploaded_bytes:,} bytes, "
                              f"{per_param:.2f} bytes per parameter ({sim.config.update_encoding})")

    def _uploads(self, done: int, total: int, uploaded: int, nodes: int) -> None:
        """On a terminal, the bar also moves while a round's updates go in (a 1,000-node round takes seconds)."""
        if self.stdout.isatty() and (uploaded == nodes or uploaded % max(1, nodes // 50) == 0):
            filled = BAR * (done * nodes + uploaded) // (total * nodes)
            line = f"[{'#' * filled}{'.' * (BAR - filled)}] round {done + 1}/{total} {uploaded}/{nodes} updates"
            self.stdout.write(f"\r{line:<100}", ending="")
            self.stdout.flush()

    def _progress(self, done: int, total: int, rnd: Round) -> None:
        filled = BAR * done // total
        shown = ", ".join(f"{k} {rnd.metrics[k]:.4f}" for k in ("test_accuracy", "val_accuracy", "loss")
                          if isinstance(rnd.metrics.get(k), float))[:60]
        line = f"[{'#' * filled}{'.' * (BAR - filled)}] round {rnd.number}/{total} {rnd.status}  {shown}"
        # On a terminal the bar redraws in place; in a log or a pipe every round gets its own line.
        tty = self.stdout.isatty()
        self.stdout.write(f"\r{line:<100}" if tty else line, ending="" if tty else "\n")
        self.stdout.flush()

    def _table(self, rows: list[tuple[Round, float]]) -> None:
        used = [c for c in COLUMNS if any(c in r.metrics for r, _ in rows)]
        self.stdout.write(f"{'round':>5} {'status':>7} {'updates':>7} " + " ".join(f"{c:>13}" for c in used)
                          + f" {'seconds':>8}")
        for rnd, seconds in rows:
            cells = " ".join(f"{rnd.metrics[c]:>13.4f}" if isinstance(rnd.metrics.get(c), float) else f"{'-':>13}"
                             for c in used)
            flag = "  stopped early" if rnd.metrics.get("stopped_early") else ""
            self.stdout.write(f"{rnd.number:>5} {rnd.status:>7} {rnd.metrics.get('num_results', 0):>7} {cells} "
                              f"{seconds:>8.2f}{flag}")
