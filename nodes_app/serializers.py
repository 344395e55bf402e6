"""Shapes of the node API: the node list, enrollment's input and answer."""
from rest_framework import serializers

from fedsite.schema import IsoDateTimeField

NODE_STATUSES = ["online", "stale", "offline"]


class NodeSerializer(serializers.Serializer):
    node_id = serializers.CharField()
    address = serializers.CharField(allow_blank=True, help_text="The node's own HTTP base URL; may be empty.")
    status = serializers.ChoiceField(choices=NODE_STATUSES, help_text="From its last contact.")
    last_seen = IsoDateTimeField(allow_null=True)
    source = serializers.ChoiceField(choices=["api", "cli", "etcd"])  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class
    last_round = serializers.IntegerField(allow_null=True, help_text="The last round it uploaded to.")


class NodeEnrolledSerializer(NodeSerializer):
    token = serializers.CharField(help_text="The node's secret: send it as `Authorization: Bearer <token>`. "
                                  "Shown once; the server keeps only its hash.")


class NodeRegisterInputSerializer(serializers.Serializer):
    node_id = serializers.CharField(max_length=64, trim_whitespace=False, required=False,
                                    help_text="Required to enroll; with a token, optional and must be its node's.")
    address = serializers.CharField(max_length=200, allow_blank=True, required=False, default="",
                                    help_text="The node's own http(s) base URL, or empty.")
