"""Federated feature statistics: a node reports its count, sum and sum of squares before round 1, and reads
the scaling the server combined from every node's report (aggregation.services.features)."""
import math
from typing import Any

import numpy as np
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregation import parsing, selectors
from aggregation.apis import body_read, experiment_from
from aggregation.fl.features import FeatureStats
from aggregation.serializers import shaped
from aggregation.serializers_models import (
    FeatureReportAcceptedSerializer,
    FeatureScalingSerializer,
    FeatureStatsInputSerializer,
)
from aggregation.services.features import feature_report_submit
from fedsite.errors import ApplicationError
from fedsite.schema import EXPERIMENT, errors
from nodes_app.auth import IsNode, NodeTokenAuthentication, node_required

MAX_FEATURES = 1_000_000


def _numbers(value: Any, name: str) -> np.ndarray:
    if (not isinstance(value, list) or not value or len(value) > MAX_FEATURES
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ApplicationError("bad_feature_stats", f"{name} must be a non-empty list of numbers, one per feature.")
    if not all(math.isfinite(v) for v in value):
        raise ApplicationError("bad_feature_stats", f"{name} contains NaN or infinity.")
    return np.asarray(value, dtype=np.float64)


def feature_stats_parse(body: Any) -> FeatureStats:
    if not isinstance(body, dict):
        raise ApplicationError("bad_json", "Send a JSON object with count, sum and sum_sq.")
    unknown = sorted(set(body) - {"count", "sum", "sum_sq"})
    if unknown:
        raise ApplicationError("bad_feature_stats", f"Unknown field(s) {', '.join(unknown)}; send count, sum and "
                               "sum_sq.")
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ApplicationError("bad_feature_stats", "count must be the number of training rows, a whole number of "
                               "at least 1.")
    return FeatureStats(count, _numbers(body.get("sum"), "sum"), _numbers(body.get("sum_sq"), "sum_sq"))


class FeaturesApi(APIView):
    """GET: the experiment's feature scaling (status collecting, ready or local); it only reads: reports are
    combined when the last expected one arrives, or by the sweeper once a quorum's round timeout has passed.
    POST: a node's statistics."""

    authentication_classes = [NodeTokenAuthentication]

    def get_permissions(self) -> list:
        return [IsNode()] if self.request.method == "POST" else []

    @extend_schema(operation_id="features_get", parameters=[EXPERIMENT],
                   responses={200: FeatureScalingSerializer, **errors(401, 404)})
    def get(self, request: Request) -> Response:
        return Response(shaped(FeatureScalingSerializer, selectors.feature_scaling_state(experiment_from(request))))

    @extend_schema(operation_id="features_report", parameters=[EXPERIMENT], request=FeatureStatsInputSerializer,
                   responses={200: FeatureReportAcceptedSerializer, 201: FeatureReportAcceptedSerializer,
                              **errors(400, 401, 404, 409, 413)})
    def post(self, request: Request) -> Response:
        node = node_required(request)
        experiment = experiment_from(request)
        stats = feature_stats_parse(parsing.json_body(body_read(request)))
        _report, created = feature_report_submit(experiment=experiment, node=node, stats=stats)
        return Response(shaped(FeatureReportAcceptedSerializer, {
            **selectors.feature_scaling_state(experiment), "node_id": node.node_id,
            "report": "accepted" if created else "already_accepted"}), status=201 if created else 200)
