"""Creating an experiment from an operator's options, the same way from the CLI, the admin and the API.

The model comes from an initial safetensors file (version 0 is exactly its tensors), from the first
node to connect (`init_from_node`), or is the built-in MLP configured by the environment.
"""
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from aggregation.fl.initfile import initial_model_loads
from aggregation.fl.manifest import PENDING
from aggregation.fl.serde import SerdeError
from aggregation.models import Experiment
from aggregation.services.experiments import experiment_create, experiment_env_fields
from fedsite.errors import ApplicationError

# Options an operator may set, by the Experiment field they fill.
OPTIONS = ("strategy", "strategy_params", "total_nodes", "min_nodes", "max_rounds", "round_timeout_s", "on_timeout",
           "epochs", "learning_rate", "batch_size", "seed", "update_max_norm", "update_norm_mode", "update_encoding",
           "stop_metric", "stop_op", "stop_threshold", "stop_patience", "server_eval", "server_eval_target",
           "model_spec", "feature_scaling")
# Float options: (lowest value, whether the lowest itself is refused), as FL_* settings check them; None: any.
FLOAT_LIMITS = {"round_timeout_s": (0.1, False), "learning_rate": (0.0, False), "update_max_norm": (0.0, True),
                "stop_threshold": None}


def _validation_sentence(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return " ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)


def _number_problems(candidate: Experiment) -> list[str]:
    """What FloatField lets through but a run cannot use: NaN, infinity, a timeout or bound of 0 or less."""
    problems = []
    for field, limit in FLOAT_LIMITS.items():
        value = getattr(candidate, field)
        if value is None:
            continue
        low, open_ = limit or (-math.inf, False)
        if not math.isfinite(value) or value < low or (open_ and value == low):
            bound = "" if limit is None else f" {'above' if open_ else 'of at least'} {low:g}"
            problems.append(f"{field}: {value!r} is not a finite number{bound}.")
    return problems


def experiment_setup(*, name: str, init_file: bytes | None = None, init_name: str = "", init_from_node: bool = False,
                     **options: Any) -> Experiment:
    """Validate everything, then create the experiment with its version 0 and round 1 (or wait for a node).

    Every mistake is an ApplicationError with a sentence, raised before anything is written.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ApplicationError("bad_option", f"Unknown option(s): {', '.join(unknown)}; "
                               f"the options are {', '.join(OPTIONS)}.")
    if init_file is not None and init_from_node:
        raise ApplicationError("bad_option", "Give an initial file or ask for the first node's parameters, not both.")
    if (init_file is not None or init_from_node) and "model_spec" in options:
        raise ApplicationError("bad_option", "An initial file or the first node's parameters define the model; "
                               "leave model_spec out.")
    fields = {**experiment_env_fields(), **{k: v for k, v in options.items() if v is not None}}
    if options.get("min_nodes") is None:  # absent or null: the default quorum, never above total_nodes
        try:
            fields["min_nodes"] = min(int(fields["min_nodes"]), int(fields["total_nodes"]))
        except (TypeError, ValueError, OverflowError):
            pass  # total_nodes is not a number: clean_fields below says so in a sentence
    initial = None
    if (init_file is not None or init_from_node) and "server_eval" not in options:
        # A model of the user's own: the environment's test set is for the built-in MLP.
        fields["server_eval"] = ""
    if init_file is not None:
        if len(init_file) > settings.FL_MAX_INIT_BYTES:
            raise ApplicationError("too_large", f"The initial file has {len(init_file)} bytes; at most "
                                   f"{settings.FL_MAX_INIT_BYTES} are accepted.", 413)
        try:
            manifest, initial = initial_model_loads(init_file)
        except SerdeError as exc:
            where = f" {init_name}" if init_name else ""
            raise ApplicationError("bad_init_file", f"The initial file{where} cannot be used: {exc}.") from None
        fields["model_spec"] = manifest.to_dict()
    if init_from_node:
        fields["model_spec"] = dict(PENDING)
    candidate = Experiment(name=name, **fields)
    if init_from_node:
        candidate.status = Experiment.Status.INITIALIZING
    try:
        # Fields first: they turn JSON strings into numbers, and clean() compares numbers ("3" > 2 is a TypeError).
        candidate.clean_fields()
        candidate.full_clean(validate_unique=False)
    except ValidationError as exc:
        raise ApplicationError("invalid_experiment", _validation_sentence(exc)) from None
    except OverflowError:  # int(inf) inside Django's field conversion
        raise ApplicationError("invalid_experiment", "A number option is infinite or too large.") from None
    problems = _number_problems(candidate)
    if problems:  # a NaN timeout reached the database as NULL and was reported as a name clash
        raise ApplicationError("invalid_experiment", " ".join(problems))
    # Stored as validated (numbers, not the strings a form or JSON sent), and answered that way.
    fields = {key: getattr(candidate, key) for key in fields}
    if Experiment.objects.filter(name=name).exists():
        raise ApplicationError("experiment_exists", f"An experiment named {name!r} already exists.", 409)
    init = f"file {init_name}" if init_name else ("file" if init_file is not None else "")
    try:
        return experiment_create(name=name, initial=initial, init=init, init_from_node=init_from_node, **fields)
    except IntegrityError:
        raise ApplicationError("experiment_exists", f"An experiment named {name!r} already exists.", 409) from None
