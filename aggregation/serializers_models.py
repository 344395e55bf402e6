"""Bodies and answers of the bring-your-own-model APIs (aggregation/apis_models.py): operators' experiments,
nodes' initial models, evaluations and failure reports."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from aggregation.serializers import ACCEPTED_STATUSES, EXPERIMENT_STATUSES
from fedsite.schema import JSONObjectField, NumberMapField


@extend_schema_field(OpenApiTypes.BINARY)
class SafetensorsFileField(serializers.FileField):
    pass


class ExperimentActionInputSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=0, required=False,
                                       help_text="reset only (required there): the model version to go back to.")


class ExperimentActionOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=EXPERIMENT_STATUSES)
    changed = serializers.BooleanField()
    model_version = serializers.IntegerField(allow_null=True, help_text="The latest model version.")


class ExperimentCreateInputSerializer(serializers.Serializer):
    """Multipart (with the `init` file), urlencoded or JSON; form values are parsed as JSON where a number or
    an object is expected."""

    name = serializers.SlugField(max_length=64)
    init = SafetensorsFileField(required=False, help_text="The initial model: a safetensors file (multipart).")
    init_from_node = serializers.BooleanField(required=False, help_text="Take version 0 from the first node.")
    strategy = serializers.CharField(required=False)
    strategy_params = JSONObjectField(required=False)
    model_spec = JSONObjectField(required=False)
    total_nodes = serializers.IntegerField(required=False, min_value=1)
    min_nodes = serializers.IntegerField(required=False, min_value=1)
    max_rounds = serializers.IntegerField(required=False, min_value=0)
    round_timeout_s = serializers.FloatField(required=False)
    on_timeout = serializers.ChoiceField(["fail", "extend"], required=False)
    epochs = serializers.IntegerField(required=False, min_value=1)
    learning_rate = serializers.FloatField(required=False)
    batch_size = serializers.IntegerField(required=False, min_value=0)
    seed = serializers.IntegerField(required=False, min_value=0)
    update_max_norm = serializers.FloatField(required=False, allow_null=True)
    update_norm_mode = serializers.ChoiceField(["reject", "clip"], required=False)
    update_encoding = serializers.ChoiceField(["none", "fp16", "int8"], required=False)
    stop_metric = serializers.CharField(required=False, allow_blank=True)
    stop_op = serializers.ChoiceField([">=", "<="], required=False)
    stop_threshold = serializers.FloatField(required=False, allow_null=True)
    stop_patience = serializers.IntegerField(required=False, min_value=1)
    server_eval = serializers.CharField(required=False, allow_blank=True)
    server_eval_target = serializers.CharField(required=False, allow_blank=True)


class ExperimentCreatedSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=EXPERIMENT_STATUSES)
    strategy = serializers.CharField()
    model_spec = JSONObjectField()
    total_nodes = serializers.IntegerField()
    min_nodes = serializers.IntegerField()
    max_rounds = serializers.IntegerField()
    model_version = serializers.IntegerField(allow_null=True, help_text="0, or null while waiting for a node.")
    sha256 = serializers.CharField(allow_null=True)


class ModelInitialOutputSerializer(serializers.Serializer):
    experiment = serializers.CharField()
    model_version = serializers.IntegerField()
    sha256 = serializers.CharField()
    tensors = serializers.IntegerField(help_text="How many tensors the model has.")


class EvaluationInputSerializer(serializers.Serializer):
    loss = serializers.FloatField()
    num_examples = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    metrics = NumberMapField(required=False, allow_null=True, help_text="At most 64 names to finite numbers.")


class EvaluationOutputSerializer(serializers.Serializer):
    model_version = serializers.IntegerField()
    node_id = serializers.CharField()
    status = serializers.ChoiceField(choices=ACCEPTED_STATUSES)
    evaluation = JSONObjectField(allow_null=True, help_text="The version's evaluation summary so far.")


class RoundFailureInputSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="Why this node cannot train on the round's model, as a sentence.")


class RoundFailureOutputSerializer(serializers.Serializer):
    round = serializers.IntegerField()
    node_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["recorded", "already"])


class FeatureStatsInputSerializer(serializers.Serializer):
    """A node's federated feature statistics over its raw training rows (POST /api/features)."""

    count = serializers.IntegerField(min_value=1, help_text="The node's training rows.")
    sum = serializers.ListField(child=serializers.FloatField(), min_length=1, help_text="Per feature: the sum.")
    sum_sq = serializers.ListField(child=serializers.FloatField(), min_length=1,
                                   help_text="Per feature: the sum of squares.")


FEATURE_STATUSES = ["collecting", "ready", "local"]


class FeatureScalingSerializer(serializers.Serializer):
    """The experiment's feature scaling: `collecting` reports, `ready` (fixed: every party applies
    x ↦ (x − shift) / scale), or `local` (the data set's fixed range, applied by each party itself)."""

    experiment = serializers.CharField()
    scaling = serializers.ChoiceField(choices=["global", "node", "range"])
    status = serializers.ChoiceField(choices=FEATURE_STATUSES)
    reported = serializers.IntegerField(required=False, help_text="collecting: nodes that reported so far.")
    required = serializers.IntegerField(  # type: ignore[assignment]  # a wire name: DRF moves declared fields off
        required=False, help_text="collecting: reports that fix it at once.")
    shift = serializers.ListField(child=serializers.FloatField(), required=False, help_text="ready: per feature.")
    scale = serializers.ListField(child=serializers.FloatField(), required=False, help_text="ready: per feature.")
    nodes = serializers.IntegerField(required=False, help_text="ready: the nodes whose statistics were combined.")
    count = serializers.IntegerField(required=False, help_text="ready: the training rows behind them.")


class FeatureReportAcceptedSerializer(FeatureScalingSerializer):
    node_id = serializers.CharField()
    report = serializers.ChoiceField(choices=["accepted", "already_accepted"])
