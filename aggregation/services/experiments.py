"""Creating experiments, with their version 0 and first round."""
import json
import logging
import secrets

from django.conf import settings
from django.db import IntegrityError, transaction

from aggregation.fl.model import MLPSpec
from aggregation.fl.registry import strategy_create
from aggregation.fl.serde import params_dumps, sha256_hex
from aggregation.models import Experiment, ModelVersion
from aggregation.services.evaluation import experiment_learning_defaults
from fedsite.errors import ApplicationError

logger = logging.getLogger("fedsite.experiments")


def experiment_spec(experiment: Experiment) -> MLPSpec:
    return MLPSpec.from_dict(experiment.model_spec)


def _default_fields() -> dict:
    try:
        layers = tuple(int(v) for v in settings.FL_MODEL_LAYERS.split(","))
        strategy_params = json.loads(settings.FL_STRATEGY_PARAMS)
    except ValueError as exc:
        raise ApplicationError(
            "bad_configuration", f"FL_MODEL_LAYERS or FL_STRATEGY_PARAMS is malformed: {exc}"
        ) from None
    return {
        "model_spec": MLPSpec(layers=layers, task=settings.FL_MODEL_TASK).to_dict(),
        "strategy": settings.FL_STRATEGY,
        "strategy_params": strategy_params,
        "total_nodes": settings.TOTAL_NODES,
        "min_nodes": min(settings.FL_MIN_NODES, settings.TOTAL_NODES),
        "round_timeout_s": settings.FL_ROUND_TIMEOUT_S,
        "on_timeout": settings.FL_ON_TIMEOUT,
        "max_rounds": settings.FL_MAX_ROUNDS,
        "epochs": settings.FL_EPOCHS,
        "learning_rate": settings.FL_LEARNING_RATE,
        "batch_size": settings.FL_BATCH_SIZE,
        "seed": settings.FL_SEED,
        "update_max_norm": settings.FL_UPDATE_MAX_NORM,
        "update_norm_mode": settings.FL_UPDATE_NORM_MODE,
        "update_encoding": settings.FL_UPDATE_ENCODING,
        **experiment_learning_defaults(),
    }


def _dp_seed_filled(params: object) -> object:
    """A DP strategy without a noise seed gets a secret one: reproducible after a restart, unknown to clients."""
    if isinstance(params, dict) and isinstance(params.get("dp"), dict) and "seed" not in params["dp"]:
        return {**params, "dp": {**params["dp"], "seed": secrets.randbelow(2**63)}}
    return params


def experiment_public_params(params: object) -> object:
    """strategy_params as shown to clients: without the DP noise seed (knowing it would undo the noise)."""
    if isinstance(params, dict) and isinstance(params.get("dp"), dict) and "seed" in params["dp"]:
        return {**params, "dp": {k: v for k, v in params["dp"].items() if k != "seed"}}
    return params


def experiment_create(*, name: str, **fields: object) -> Experiment:
    """Create an experiment with its initial model (version 0) and open round 1, atomically."""
    from aggregation.services.rounds import round_open

    if "strategy_params" in fields:
        fields["strategy_params"] = _dp_seed_filled(fields["strategy_params"])
    with transaction.atomic():
        experiment = Experiment.objects.create(name=name, **fields)
        spec = experiment_spec(experiment)
        strategy = strategy_create(experiment.strategy, experiment.strategy_params)
        # One initial model for everyone: the prototype let every node start from its own weights.
        params = strategy.initialize_parameters(spec, experiment.seed)
        blob = params_dumps(spec, params)
        version0 = ModelVersion.objects.create(
            experiment=experiment, version=0, parameters=blob, sha256=sha256_hex(blob), size=len(blob)
        )
        round_open(experiment, version0, number=1)
    logger.info("experiment %s created: %s, %d nodes per round", name, experiment.strategy, experiment.total_nodes)
    return experiment


def experiment_default_get_or_create() -> Experiment:
    """The experiment named FL_EXPERIMENT, created from the environment on first use."""
    name = settings.FL_EXPERIMENT
    experiment = Experiment.objects.filter(name=name).first()
    if experiment is not None:
        return experiment
    try:
        return experiment_create(name=name, **_default_fields())
    except IntegrityError:
        # Another process created it between our read and our write.
        return Experiment.objects.get(name=name)
