"""Shapes of the node API: the node list, enrollment's input and answer."""
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from fedsite.schema import IsoDateTimeField

NODE_STATUSES = ["online", "stale", "offline", "done"]


@extend_schema_field({"type": "object", "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                      "maxProperties": 16})
class NodeDataField(serializers.JSONField):
    pass


class NodeSerializer(serializers.Serializer):
    node_id = serializers.CharField()
    address = serializers.CharField(allow_blank=True, help_text="The node's own HTTP base URL; may be empty.")
    status = serializers.ChoiceField(choices=NODE_STATUSES, help_text="`done` once it left cleanly after its run "
                                     "ended; otherwise from its last contact.")
    last_seen = IsoDateTimeField(allow_null=True)
    source = serializers.ChoiceField(choices=["api", "cli", "etcd"])  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class
    last_round = serializers.IntegerField(allow_null=True, help_text="The last round it uploaded to.")
    experiment = serializers.CharField(allow_null=True, help_text="The experiment it last took part in.")
    done_at = IsoDateTimeField(allow_null=True, help_text="When it said it was done; null while it takes part.")
    data = NodeDataField(help_text="What the node says about its local data (data set, partitioning, rows).")  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class


class NodeEnrolledSerializer(NodeSerializer):
    token = serializers.CharField(help_text="The node's secret: send it as `Authorization: Bearer <token>`. "
                                  "Shown once; the server keeps only its hash.")


class NodeRegisterInputSerializer(serializers.Serializer):
    node_id = serializers.CharField(max_length=64, trim_whitespace=False, required=False,
                                    help_text="Required to enroll; with a token, optional and must be its node's.")
    address = serializers.CharField(max_length=200, allow_blank=True, required=False, default="",
                                    help_text="The node's own http(s) base URL, or empty.")
    data = NodeDataField(required=False, help_text="What the node says about its local data, shown on the "  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class
                         "dashboard: at most 16 names to strings (200 characters) or numbers, e.g. "
                         "`{\"source\": \"digits\", \"partition\": \"dirichlet:0.5\"}`.")
