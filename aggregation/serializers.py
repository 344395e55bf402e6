"""Output shapes of the aggregation API: the selectors return plain data, these serializers shape (and document) it.

Field names and nesting are the wire contract the node SDK and the dashboard read; a selector's key that is not
declared here is not sent. Timestamps arrive as ISO 8601 strings and leave unchanged.
"""
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from aggregation.models import Experiment, Round
from fedsite.schema import IsoDateTimeField, JSONObjectField, NumberListField, NumberMapField
from nodes_app.serializers import NODE_STATUSES, NodeDataField

# Choice sets named once (SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]): several shapes share them.
EXPERIMENT_STATUSES = list(Experiment.Status.values)
ROUND_STATUSES = list(Round.Status.values)
ROUND_STATE_STATUSES = [*ROUND_STATUSES, "none"]  # "none": no round yet
ACCEPTED_STATUSES = ["accepted", "already_accepted"]


@extend_schema_field({
    "type": "object", "additionalProperties": {},
    "properties": {"epochs": {"type": "integer"}, "learning_rate": {"type": "number"},
                   "batch_size": {"type": "integer"},
                   "update_encoding": {"type": "string", "enum": ["fp16", "int8"]}},
    "required": ["epochs", "learning_rate", "batch_size"],
    "description": "Training config for this round's nodes, with whatever the strategy adds (e.g. `proximal_mu`); "
                   "`update_encoding` is present only when uploads are to be compressed.",
})
class RoundConfigField(serializers.JSONField):
    pass


class StatusSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="Always `running`: the prototype's health check.")
    message = serializers.CharField()
    mode = serializers.ChoiceField(choices=["embedded", "scaled"])
    experiment = serializers.CharField(allow_null=True, help_text="null when the experiment does not exist.")
    detail = serializers.CharField(required=False, help_text="Why there is no experiment (then no round fields).")
    round = serializers.IntegerField(required=False)
    round_status = serializers.CharField(required=False)
    model_version = serializers.IntegerField(required=False, allow_null=True)
    run_status = serializers.CharField(required=False)

    def to_representation(self, instance: Any) -> Any:
        # Without an experiment the round fields are left out, not sent as null (DRF fills a nullable one in).
        return {k: v for k, v in super().to_representation(instance).items() if k in instance}


class ExperimentSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=EXPERIMENT_STATUSES)
    strategy = serializers.CharField()
    strategy_params = JSONObjectField(help_text="The strategy's hyperparameters (secrets left out).")
    model_spec = JSONObjectField()
    total_nodes = serializers.IntegerField()
    min_nodes = serializers.IntegerField()
    round_timeout_s = serializers.FloatField()
    on_timeout = serializers.ChoiceField(choices=["fail", "extend"])
    max_rounds = serializers.IntegerField()
    epochs = serializers.IntegerField()
    learning_rate = serializers.FloatField()
    batch_size = serializers.IntegerField()
    update_max_norm = serializers.FloatField(allow_null=True)
    update_norm_mode = serializers.ChoiceField(choices=["reject", "clip"])
    update_encoding = serializers.ChoiceField(choices=["none", "fp16", "int8"])
    server_eval = serializers.CharField(allow_blank=True)
    stop_metric = serializers.CharField(allow_blank=True)
    stop_op = serializers.ChoiceField(choices=[">=", "<="])
    stop_threshold = serializers.FloatField(allow_null=True)
    stop_patience = serializers.IntegerField()
    finish_reason = serializers.CharField(allow_blank=True)


class ProgressSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    required = serializers.IntegerField()  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class
    min_nodes = serializers.IntegerField()
    nodes = serializers.ListField(child=serializers.CharField(), help_text="Nodes that uploaded, in arrival order.")


class RunSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=EXPERIMENT_STATUSES)
    max_rounds = serializers.IntegerField()
    model_version = serializers.IntegerField(allow_null=True, help_text="The latest model version.")
    finish_reason = serializers.CharField(allow_blank=True)


class RoundStateSerializer(serializers.Serializer):
    experiment = serializers.CharField()
    number = serializers.IntegerField(help_text="The current round; 0 before the first.")
    status = serializers.ChoiceField(choices=ROUND_STATE_STATUSES)
    model_version = serializers.IntegerField(allow_null=True, help_text="The version this round trains from.")
    deadline = IsoDateTimeField(allow_null=True)
    config = RoundConfigField()
    progress = ProgressSerializer()
    run = RunSerializer()
    model_spec = JSONObjectField()
    strategy = serializers.CharField()


class RoundSummarySerializer(serializers.Serializer):
    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ROUND_STATUSES)
    base_version = serializers.IntegerField()
    model_version = serializers.IntegerField(allow_null=True, help_text="The version it produced, once closed.")
    opened_at = IsoDateTimeField()
    deadline = IsoDateTimeField()
    closed_at = IsoDateTimeField(allow_null=True)
    duration_s = serializers.FloatField(allow_null=True)
    updates = serializers.IntegerField()
    metrics = JSONObjectField(help_text="Aggregated metrics and the server's counts.")
    failure_reason = serializers.CharField(allow_blank=True)
    node_failures = JSONObjectField(help_text="Node id to the reason it could not train this round.")


class RoundHistorySerializer(serializers.Serializer):
    experiment = serializers.CharField()
    rounds = RoundSummarySerializer(many=True)


class UpdateRowSerializer(serializers.Serializer):
    node_id = serializers.CharField()
    num_examples = serializers.IntegerField()
    metrics = JSONObjectField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    delta_norm = serializers.FloatField(allow_null=True, help_text="Distance from the round's base model.")
    rejected_reason = serializers.CharField(allow_null=True)
    received_at = IsoDateTimeField()


class RoundDetailSerializer(RoundSummarySerializer):
    updates = UpdateRowSerializer(many=True)  # type: ignore[assignment]


class ModelVersionSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField(help_text="Bytes of its safetensors encoding.")
    parent = serializers.IntegerField(allow_null=True)  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class
    round = serializers.IntegerField(allow_null=True, help_text="The round that produced it.")
    contributors = serializers.JSONField(help_text="The updates aggregated into it.")
    evaluation = JSONObjectField(help_text="Federated evaluation by the nodes.")
    created_at = IsoDateTimeField()


class TensorSerializer(serializers.Serializer):
    name = serializers.CharField()
    shape = serializers.ListField(child=serializers.IntegerField())
    dtype = serializers.CharField()
    init_dtype = serializers.CharField(required=False, help_text="The dtype version 0 was given in, when not F32.")


class ModelDownloadJsonSerializer(ModelVersionSerializer):
    tensors = TensorSerializer(many=True, help_text="What `parameters` holds, in order, each row-major.")
    parameters = NumberListField()


class ModelParamsSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="Always `success` (the prototype's shape).")
    parameters = NumberListField()
    size = serializers.IntegerField()
    version = serializers.IntegerField()
    sha256 = serializers.CharField()


class UpdateAcceptedSerializer(serializers.Serializer):
    round = serializers.IntegerField()
    node_id = serializers.CharField()
    sha256 = serializers.CharField(help_text="Digest of the parameters' canonical float32 encoding.")
    received = serializers.IntegerField()
    required = serializers.IntegerField()  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class
    status = serializers.ChoiceField(choices=ACCEPTED_STATUSES)


@extend_schema_field({"oneOf": [{"type": "array", "items": {"type": "number"}},
                               {"type": "object", "additionalProperties": {}}]})
class ParametersField(serializers.JSONField):
    pass


class UpdateJsonInputSerializer(serializers.Serializer):
    """The JSON form of an upload (the safetensors form carries the same in its `__metadata__`)."""

    parameters = ParametersField(help_text="A flat list of the model's numbers in manifest order, or an object "
                                 "of tensor name to nested lists.")
    num_examples = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    metrics = NumberMapField(required=False, allow_null=True, help_text="At most 64 names to finite numbers.")


class DashboardServerSerializer(serializers.Serializer):
    status = serializers.CharField()
    mode = serializers.ChoiceField(choices=["embedded", "scaled"])
    now = IsoDateTimeField()


class DashboardExperimentSerializer(serializers.Serializer):
    name = serializers.CharField()
    strategy = serializers.CharField()
    status = serializers.ChoiceField(choices=EXPERIMENT_STATUSES)
    total_nodes = serializers.IntegerField()
    min_nodes = serializers.IntegerField()
    max_rounds = serializers.IntegerField()
    round_timeout_s = serializers.FloatField()
    on_timeout = serializers.ChoiceField(choices=["fail", "extend"])
    finish_reason = serializers.CharField(allow_blank=True)
    strategy_params = JSONObjectField(help_text="The strategy's hyperparameters as it runs: its defaults, then what "
                                      "the experiment set (secrets left out).")
    epochs = serializers.IntegerField()
    learning_rate = serializers.FloatField()
    batch_size = serializers.IntegerField()
    update_encoding = serializers.ChoiceField(choices=["none", "fp16", "int8"])
    server_eval = serializers.CharField(allow_blank=True)
    partitions = serializers.ListField(child=serializers.CharField(), help_text="How the nodes say their data was "
                                       "split (iid, dirichlet:0.5, shards:2); empty when none said.")
    datasets = serializers.ListField(child=serializers.CharField(), help_text="The data sets the nodes say they hold.")


class DashboardExperimentChoiceSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=EXPERIMENT_STATUSES)
    strategy = serializers.CharField()
    rounds = serializers.IntegerField(help_text="Closed rounds.")
    max_rounds = serializers.IntegerField()


class ThresholdsSerializer(serializers.Serializer):
    stale_s = serializers.FloatField()
    offline_s = serializers.FloatField()


class DashboardNodeSerializer(serializers.Serializer):
    node_id = serializers.CharField()
    address = serializers.CharField(allow_blank=True)
    status = serializers.ChoiceField(choices=NODE_STATUSES)
    last_seen = IsoDateTimeField(allow_null=True)
    last_round = serializers.IntegerField(allow_null=True)
    updates = serializers.IntegerField()
    source = serializers.ChoiceField(choices=["api", "cli", "etcd"])  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class
    discovery_alive = serializers.BooleanField(allow_null=True)
    experiment = serializers.CharField(allow_null=True, help_text="The experiment it last took part in.")
    done_at = IsoDateTimeField(allow_null=True, help_text="When it left cleanly after its run ended.")
    data = NodeDataField(help_text="What the node says about its local data.")  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class


class DownloadLinksSerializer(serializers.Serializer):
    safetensors = serializers.CharField()
    json = serializers.CharField()


class ModelCardSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    created_at = IsoDateTimeField()
    evaluation = JSONObjectField()
    download = DownloadLinksSerializer()
    summary = JSONObjectField(help_text="Per-tensor mean, std and norm, and one histogram of every parameter.")


class DashboardSnapshotSerializer(serializers.Serializer):
    server = DashboardServerSerializer()
    experiment = DashboardExperimentSerializer()
    experiments = DashboardExperimentChoiceSerializer(many=True, help_text="Every experiment, for the switcher.")
    round = RoundStateSerializer()
    thresholds = ThresholdsSerializer()
    nodes = DashboardNodeSerializer(many=True)
    rounds = RoundSummarySerializer(many=True)
    charts = JSONObjectField(help_text="Series aligned on `rounds`: round metrics, each node's norm and loss, and "
                             "`groups`: which round metrics are fractions (0 to 1), losses, or other.")
    model = ModelCardSerializer(allow_null=True, help_text="The latest model; null before version 0 exists.")


def shaped(serializer: type[serializers.Serializer], data: Any, **kwargs: Any) -> Any:
    """`data` as the serializer declares it (many=True for a list)."""
    return serializer(data, **kwargs).data
