"""Creating experiments, with their version 0 and first round."""
import json
import logging
import secrets

from django.conf import settings
from django.db import IntegrityError, transaction

from aggregation.fl import NDArrays
from aggregation.fl.manifest import PENDING, Manifest, ModelSpec
from aggregation.fl.model import MLPSpec
from aggregation.fl.registry import strategy_create
from aggregation.fl.serde import check_finite, params_dumps, sha256_hex
from aggregation.models import Experiment, ModelVersion

# experiment_public_params is a read, in selectors now; still importable from here for the dashboard.
from aggregation.selectors import experiment_public_params as experiment_public_params
from aggregation.selectors import experiment_spec
from aggregation.services.evaluation import experiment_learning_defaults
from aggregation.services.rounds import round_open
from aggregation.services.versions import version_metadata
from fedsite.errors import ApplicationError

logger = logging.getLogger("fedsite.experiments")


def _version0_create(experiment: Experiment, spec: ModelSpec, params: NDArrays, init: str,
                     contributors: list | None = None) -> ModelVersion:
    blob = params_dumps(spec, params, version_metadata(experiment, spec, 0, init=init))
    return ModelVersion.objects.create(experiment=experiment, version=0, parameters=blob, sha256=sha256_hex(blob),
                                       size=len(blob), contributors=contributors or [])


def experiment_env_fields() -> dict:
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
        "feature_scaling": settings.FL_FEATURE_SCALING,
        **experiment_learning_defaults(),
    }


def _dp_seed_filled(params: object) -> object:
    """A DP strategy without a noise seed gets a secret one: reproducible after a restart, unknown to clients."""
    if isinstance(params, dict) and isinstance(params.get("dp"), dict) and "seed" not in params["dp"]:
        return {**params, "dp": {**params["dp"], "seed": secrets.randbelow(2**63)}}
    return params


def experiment_create(*, name: str, initial: NDArrays | None = None, init: str = "", init_from_node: bool = False,
                      **fields: object) -> Experiment:
    """Create an experiment with its initial model (version 0) and open round 1, atomically.

    Version 0 is `initial` (a user's weights, `init` says where they came from), else the strategy's
    initialisation of the built-in MLP. With `init_from_node` there is no version 0 yet: the
    experiment waits, `initializing`, for the first node's parameters (experiment_initialize_from_node).
    """
    if "strategy_params" in fields:
        fields["strategy_params"] = _dp_seed_filled(fields["strategy_params"])
    if init_from_node:
        fields.update(status=Experiment.Status.INITIALIZING, model_spec=dict(PENDING))
    with transaction.atomic():
        experiment = Experiment.objects.create(name=name, **fields)
        strategy = strategy_create(experiment.strategy, experiment.strategy_params)
        if init_from_node:
            logger.info("experiment %s created: waiting for the first node's parameters", name)
            return experiment
        spec = experiment_spec(experiment)
        # One initial model for everyone: the prototype let every node start from its own weights.
        params = initial if initial is not None else strategy.initialize_parameters(spec, experiment.seed)
        if params is None:
            raise ApplicationError("no_initial_model", "A model given as a tensor manifest needs its initial "
                                   "weights: give an initial safetensors file, or let the first node provide them.")
        version0 = _version0_create(experiment, spec, params, init or f"{strategy.name} initialisation, seed "
                                    f"{experiment.seed}")
        round_open(experiment, version0, number=1)
    logger.info("experiment %s created: %s, %d nodes per round", name, experiment.strategy, experiment.total_nodes)
    return experiment


def experiment_initialize_from_node(experiment: Experiment, node_id: str, names: list[str],
                                    params: NDArrays) -> ModelVersion:
    """Make a node's parameters version 0 of an `initializing` experiment and open round 1.

    Exactly one node wins: the experiment row is locked (PostgreSQL) or writers are serialised
    (SQLite), and a second call finds the experiment running and gets a 409.
    """
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if locked.status != Experiment.Status.INITIALIZING:
            raise ApplicationError("already_initialized", f"Experiment {experiment.name!r} already has its initial "
                                   "model; download it and train.", 409)
        try:
            manifest = Manifest.from_shapes(names, params)
            check_finite(params, names)
        except ValueError as exc:  # SerdeError included
            raise ApplicationError("bad_parameters",
                                   f"These initial parameters cannot start the experiment: {exc}.") from None
        locked.model_spec, locked.status = manifest.to_dict(), Experiment.Status.RUNNING
        locked.save(update_fields=["model_spec", "status"])
        version0 = _version0_create(locked, manifest, params, f"node {node_id}",
                                    contributors=[{"node": node_id, "role": "initial_parameters"}])
        round_open(locked, version0, number=1)
    experiment.refresh_from_db()
    logger.info("experiment %s: version 0 (%d tensors, %d parameters) taken from node %s", experiment.name,
                len(names), manifest.num_params(), node_id)
    return version0


def experiment_default_get_or_create() -> Experiment:
    """The experiment named FL_EXPERIMENT, created from the environment on first use."""
    name = settings.FL_EXPERIMENT
    experiment = Experiment.objects.filter(name=name).first()
    if experiment is not None:
        return experiment
    try:
        return experiment_create(name=name, **experiment_env_fields())
    except IntegrityError:
        # Another process created it between our read and our write.
        return Experiment.objects.get(name=name)

