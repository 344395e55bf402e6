"""Federated evaluation: nodes score a model version on their own held-out data; the server keeps the
example-weighted mean on the version and on the round that produced it."""
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from aggregation import events
from aggregation.fl.aggregate import weighted_metrics
from aggregation.fl.guard import capped_examples
from aggregation.models import Evaluation, Experiment, ModelVersion, Round
from aggregation.selectors import stop_condition_reason
from aggregation.services.lifecycle import experiment_finish
from fedsite.errors import ApplicationError
from nodes_app.models import Node

logger = logging.getLogger("fedsite.evaluations")

# Round metrics written from the nodes' evaluations carry this prefix: federated_loss, federated_accuracy...
PREFIX = "federated_"


def evaluation_summary(rows: list[tuple[float, int, dict[str, Any]]]) -> dict[str, float | int]:
    """Example-weighted means of the loss and of every metric (a metric over the nodes that reported it).

    Weights are capped as in training (FL_WEIGHT_CAP_FACTOR x the median), so one node claiming billions of
    examples cannot decide the federated score by itself.
    """
    weights = capped_examples([n for _, n, _ in rows], settings.FL_WEIGHT_CAP_FACTOR)
    means = weighted_metrics([(w, {**metrics, "loss": loss}) for w, (loss, _, metrics) in zip(weights, rows)])
    return {"loss": means.pop("loss"), **dict(sorted(means.items())),
            "examples": sum(n for _, n, _ in rows), "nodes": len(rows)}


def evaluation_submit(*, experiment: Experiment, version_number: int, node: Node, loss: float, num_examples: int,
                      metrics: dict[str, float]) -> tuple[Evaluation, bool]:
    """Record `node`'s score of a version; a repeat of the same score is idempotent, a different one a 409."""
    version = experiment.versions.defer("parameters", "strategy_state").filter(version=version_number).first()
    if version is None:
        raise ApplicationError("unknown_version", f"Model version {version_number} does not exist.", 404)
    fields = {"loss": loss, "num_examples": num_examples, "metrics": metrics}
    with transaction.atomic():
        # One summary at a time per version: two nodes' reports would otherwise each see only their own row.
        ModelVersion.objects.select_for_update().filter(pk=version.pk).values_list("pk", flat=True).get()
        existing = Evaluation.objects.filter(version=version, node=node).first()
        if existing is None:
            try:
                with transaction.atomic():
                    existing = Evaluation.objects.create(version=version, node=node, **fields)
                created = True
            except IntegrityError:  # the same node's evaluation raced in from another request
                existing, created = Evaluation.objects.get(version=version, node=node), False
        else:
            created = False
        if not created:
            if (existing.loss, existing.num_examples, existing.metrics) != (loss, num_examples, metrics):
                raise ApplicationError("already_evaluated", f"Node {node.node_id} already reported a different "
                                       f"evaluation of model version {version_number}.", 409)
            return existing, False
        rows = list(version.evaluations.values_list("loss", "num_examples", "metrics"))
        summary = evaluation_summary(rows)
        ModelVersion.objects.filter(pk=version.pk).update(evaluation=summary)
        stop_reason = ""
        if version.round_id is not None:
            rnd = Round.objects.select_for_update().get(pk=version.round_id)
            rnd.metrics = {**rnd.metrics, **{PREFIX + key: value for key, value in summary.items()}}
            rnd.save(update_fields=["metrics"])
            # A stop condition on a federated metric is judged here, once the quorum's nodes have scored the
            # model: at the round's close nobody had scored it yet.
            if experiment.stop_metric.startswith(PREFIX) and summary["nodes"] >= experiment.min_nodes:
                stop_reason = stop_condition_reason(experiment, rnd, rnd.metrics)
        produced_by = version.round.number if version.round is not None else None
        events.event_send("model.evaluated", experiment, {"model_version": version_number, "evaluation": summary,
                                                          "round": produced_by})
    logger.info("[%s] model v%d scored by node %s: loss %.4f on %d examples", experiment.name, version_number,
                node.node_id, loss, num_examples)
    if stop_reason:
        try:
            experiment_finish(experiment, stop_reason)
        except ApplicationError as exc:  # a round aggregating right now: the next report judges again
            logger.info("[%s] the stop condition holds but the run cannot finish yet: %s", experiment.name, exc)
    return existing, True
