"""`python manage.py createexperiment NAME --init model.safetensors`: an experiment over a model of your own."""
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from aggregation.fl.compression import ENCODINGS
from aggregation.fl.manifest import spec_from_dict, spec_pending
from aggregation.fl.registry import STRATEGIES
from aggregation.models import Experiment
from aggregation.selectors import experiment_public_params
from aggregation.services.experiment_setup import experiment_setup
from fedsite.errors import ApplicationError

# Command-line flag -> Experiment field (None: same name with dashes).
FLAGS: dict[str, tuple[str, type, str]] = {
    "--strategy": ("strategy", str, "Aggregation strategy (default FL_STRATEGY, fedavg)."),
    "--total-nodes": ("total_nodes", int, "Distinct updates that close a round (default TOTAL_NODES)."),
    "--min-nodes": ("min_nodes", int, "Quorum at the deadline (default FL_MIN_NODES)."),
    "--max-rounds": ("max_rounds", int, "Rounds to run; 0 runs until stopped (default FL_MAX_ROUNDS)."),
    "--round-timeout": ("round_timeout_s", float, "Seconds a round waits for updates (default FL_ROUND_TIMEOUT_S)."),
    "--on-timeout": ("on_timeout", str, "fail or extend a round that misses its quorum."),
    "--epochs": ("epochs", int, "Local epochs, sent to nodes in the fit config."),
    "--learning-rate": ("learning_rate", float, "Learning rate, sent to nodes in the fit config."),
    "--batch-size": ("batch_size", int, "Batch size, sent to nodes in the fit config (0: full batch)."),
    "--update-encoding": ("update_encoding", str, f"How nodes compress uploads: {', '.join(ENCODINGS)}."),
    "--update-max-norm": ("update_max_norm", float, "Bound on an update's distance from the model (L2)."),
    "--seed": ("seed", int, "Seed of the built-in MLP's initial weights."),
    "--feature-scaling": ("feature_scaling", str, "How nodes with --data scale features: global, node or range."),
}


class Command(BaseCommand):
    help = ("Create an experiment. With --init FILE its model is exactly the tensors of a safetensors file (any "
            "model: PyTorch, Keras, numpy); with --init-from-node the first node to connect provides them; "
            "otherwise it trains the built-in MLP configured by the environment.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The experiment's name: letters, digits, - and _.")
        model = parser.add_mutually_exclusive_group()
        model.add_argument("--init", metavar="FILE", help="Initial weights as safetensors: version 0 of the model.")
        model.add_argument("--init-from-node", action="store_true",
                           help="Take version 0 from the first registered node's parameters (Flower's default).")
        parser.add_argument("--strategy-params", metavar="JSON",
                            help='Strategy hyperparameters, e.g. \'{"eta": 0.1}\'.')
        for flag, (_field, kind, text) in FLAGS.items():
            extra: dict[str, Any] = {"choices": sorted(STRATEGIES)} if flag == "--strategy" else {}
            parser.add_argument(flag, type=kind, default=None, help=text, **extra)

    def handle(self, *args: Any, **options: Any) -> None:
        fields = {field: options[flag[2:].replace("-", "_")] for flag, (field, _k, _t) in FLAGS.items()}
        if options["strategy_params"] is not None:
            try:
                fields["strategy_params"] = json.loads(options["strategy_params"])
            except ValueError as exc:
                raise CommandError(f"--strategy-params is not JSON: {exc}") from None
        init_file = None
        if options["init"]:
            path = Path(options["init"])
            try:
                init_file = path.read_bytes()
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
        if "aggregation_experiment" not in connection.introspection.table_names():
            raise CommandError("the database has no tables yet: run `python manage.py migrate` first")
        try:
            experiment = experiment_setup(name=options["name"], init_file=init_file, init_name=options["init"] or "",
                                          init_from_node=options["init_from_node"],
                                          **{k: v for k, v in fields.items() if v is not None})
        except ApplicationError as exc:
            raise CommandError(exc.detail) from None
        opened = "\n  round 1 is open" if experiment.status == Experiment.Status.RUNNING else ""
        self.stdout.write(experiment_description(experiment) + opened)


def experiment_description(experiment: Experiment) -> str:
    """What was created, for people: the model's tensors, version 0, the strategy and the round settings."""
    lines = [f"experiment {experiment.name}: {experiment.status}"]
    if spec_pending(experiment.model_spec):
        lines.append("  model: version 0 will be the first registered node's parameters"
                     if experiment.status == Experiment.Status.INITIALIZING else "  model: none (no node provided one)")
    else:
        spec = spec_from_dict(experiment.model_spec)
        names, shapes = spec.names(), spec.shapes()
        lines.append(f"  model: {len(names)} tensors, {spec.num_params():,} parameters (float32)")
        for name, shape in list(zip(names, shapes))[:12]:
            lines.append(f"    {name:<32} {'x'.join(map(str, shape)) or 'scalar'}")
        if len(names) > 12:
            lines.append(f"    ... and {len(names) - 12} more")
        v0 = experiment.versions.get(version=0)
        lines.append(f"  version 0: sha256 {v0.sha256}, {v0.size:,} bytes")
    public = experiment_public_params(experiment.strategy_params)
    params = json.dumps(public) if public else "defaults"
    lines.append(f"  strategy: {experiment.strategy} ({params})")
    lines.append(f"  rounds: close at {experiment.total_nodes} updates, quorum {experiment.min_nodes} at the "
                 f"{experiment.round_timeout_s:g} s deadline, max_rounds {experiment.max_rounds or 'unlimited'}")
    client = "" if experiment.model_spec.get("kind", "mlp") == "mlp" else " --client MODULE:ATTR"
    lines.append(f"  nodes: python manage.py runnode --id N{client} --experiment {experiment.name}")
    return "\n".join(lines)
