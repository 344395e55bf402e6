"""What every new model version says about itself: shared by the services that write versions."""
import json

from aggregation.fl.manifest import ModelSpec, manifest_of
from aggregation.fl.model import MLPSpec
from aggregation.models import Experiment

# How the built-in MLP's inputs are prepared (aggregation/datasets.py); a user needs it to use the model.
PREPROCESSING = ("inputs standardised per feature with the training rows' mean and standard deviation "
                 "(a constant feature is only centred); regression targets divided by the data set's scale; "
                 "classifier outputs are logits in class order")


def version_metadata(experiment: Experiment, spec: ModelSpec, version: int, *, parent: int | None = None,
                     round_number: int | None = None, init: str = "") -> dict[str, str]:
    """What a downloaded model says about itself in its safetensors metadata: manifest and provenance."""
    metadata = {
        "fedsite.experiment": experiment.name, "fedsite.version": str(version),
        "fedsite.round": "" if round_number is None else str(round_number),
        "fedsite.parent": "" if parent is None else str(parent),
        "fedsite.strategy": experiment.strategy,
        "fedsite.manifest": json.dumps(manifest_of(spec).to_dict()["tensors"], separators=(",", ":")),
    }
    if init:
        metadata["fedsite.init"] = init
    if isinstance(spec, MLPSpec):
        metadata.update({
            "fedsite.model": json.dumps(spec.to_dict(), separators=(",", ":")),
            "fedsite.task": spec.task,
            "fedsite.preprocessing": PREPROCESSING,
        })
    return metadata
