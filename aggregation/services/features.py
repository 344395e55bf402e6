"""Federated feature statistics before round 1: nodes report count, sum and sum of squares of their features;
once `total_nodes` have reported (or `min_nodes` and the round timeout has passed since the first report) the
server combines them, once, into the experiment's scaling, which nodes and the server's evaluation then use."""
import logging

import numpy as np
from django.db import IntegrityError, transaction
from django.utils import timezone

from aggregation.fl.features import FeatureStats, Scaling, feature_stats_check, feature_stats_combine
from aggregation.fl.model import MLPSpec
from aggregation.models import Experiment, FeatureReport
from aggregation.selectors import experiment_spec
from fedsite.errors import ApplicationError
from nodes_app.models import Node

logger = logging.getLogger("fedsite.features")

REPORTED_SCALINGS = ("global", "node")  # range needs no statistics


def experiment_scaling(experiment: Experiment) -> Scaling | None:
    """The combined scaling of a global or node experiment, or None while the reports are coming in."""
    return Scaling.from_dict(experiment.feature_stats) if experiment.feature_stats else None


def feature_report_submit(*, experiment: Experiment, node: Node, stats: FeatureStats) -> tuple[FeatureReport, bool]:
    """Record `node`'s statistics (a repeat of the same ones is idempotent, different ones a 409) and combine
    the reports when enough have arrived. Refused once the scaling is fixed: the models were trained with it."""
    if experiment.feature_scaling not in REPORTED_SCALINGS:
        raise ApplicationError("feature_stats_unused", f"Experiment {experiment.name!r} scales features with a fixed "
                               "range; it takes no feature statistics.", 409)
    spec = experiment_spec(experiment)
    if not isinstance(spec, MLPSpec):
        raise ApplicationError("feature_stats_unused", f"Experiment {experiment.name!r} trains a model of your own, "
                               "whose client scales its own data; feature statistics are for the built-in MLP.", 409)
    try:
        feature_stats_check(stats, spec.layers[0])
    except ValueError as exc:
        raise ApplicationError("bad_feature_stats", f"The feature statistics cannot be used: {exc}.") from None
    fields = {"count": stats.count, "sum": stats.sum.tolist(), "sum_sq": stats.sum_sq.tolist()}
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        existing = FeatureReport.objects.filter(experiment=locked, node=node).first()
        if existing is not None:
            if (existing.count, existing.sum, existing.sum_sq) != (fields["count"], fields["sum"], fields["sum_sq"]):
                raise ApplicationError("feature_stats_conflict", f"Node {node.node_id} already reported different "
                                       f"feature statistics for experiment {locked.name!r}.", 409)
            return existing, False
        if locked.feature_stats:
            raise ApplicationError(
                "feature_stats_fixed", f"The feature scaling of experiment {locked.name!r} was fixed from "
                f"{locked.feature_stats.get('nodes')} nodes' statistics before this report; GET /api/features "
                "gives it.", 409)
        try:
            with transaction.atomic():
                report = FeatureReport.objects.create(experiment=locked, node=node, **fields)
        except IntegrityError:  # the same node's report raced in from another request
            return FeatureReport.objects.get(experiment=locked, node=node), False
        _combine_if_due(locked)
    experiment.feature_stats = locked.feature_stats
    logger.info("[%s] feature statistics from node %s: %d rows", experiment.name, node.node_id, stats.count)
    return report, True


def feature_stats_settle(experiment: Experiment) -> bool:
    """Combine the reports if they are due (at least min_nodes, the first older than the round timeout); True
    if the scaling is fixed. Called when a node asks for the scaling, so no timer is needed."""
    if experiment.feature_stats or experiment.feature_scaling not in REPORTED_SCALINGS:
        return bool(experiment.feature_stats)
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        _combine_if_due(locked)
    experiment.feature_stats = locked.feature_stats
    return bool(experiment.feature_stats)


def _combine_if_due(locked: Experiment) -> None:
    if locked.feature_stats:
        return
    reports = list(locked.feature_reports.order_by("id"))
    enough = len(reports) >= locked.total_nodes
    if not enough and reports and len(reports) >= max(1, locked.min_nodes):
        enough = (timezone.now() - reports[0].received_at).total_seconds() >= locked.round_timeout_s
    if not enough:
        return
    parts = [FeatureStats(r.count, np.asarray(r.sum, dtype=np.float64), np.asarray(r.sum_sq, dtype=np.float64))
             for r in reports]
    scaling = feature_stats_combine(parts)
    locked.feature_stats = {**scaling.to_dict(), "nodes": len(reports), "count": sum(p.count for p in parts)}
    locked.save(update_fields=["feature_stats"])
    logger.info("[%s] feature scaling fixed from %d nodes' statistics (%d rows)", locked.name, len(reports),
                locked.feature_stats["count"])
