"""The federation's state: experiments, rounds, the updates nodes upload and the model lineage."""
from django.db import models


class Experiment(models.Model):
    class Status(models.TextChoices):
        # Created with --init-from-node: no version 0 yet; the first node's parameters become it.
        INITIALIZING = "initializing"
        RUNNING = "running"
        FINISHED = "finished"
        STOPPED = "stopped"
        PAUSED = "paused"

    class OnTimeout(models.TextChoices):
        FAIL = "fail", "fail the round and open a new one"
        EXTEND = "extend", "extend the deadline"

    class NormMode(models.TextChoices):
        REJECT = "reject", "reject updates beyond the bound"
        CLIP = "clip", "clip updates to the bound"

    class StopOp(models.TextChoices):
        AT_LEAST = ">=", "at least (accuracy)"
        AT_MOST = "<=", "at most (loss)"

    name = models.SlugField(max_length=64, unique=True)
    model_spec = models.JSONField(default=dict)
    strategy = models.CharField(max_length=32, default="fedavg")
    strategy_params = models.JSONField(default=dict, blank=True)
    total_nodes = models.PositiveIntegerField(default=3, help_text="Distinct uploads that close a round.")
    min_nodes = models.PositiveIntegerField(default=2, help_text="Quorum needed at the deadline.")
    round_timeout_s = models.FloatField(default=300.0)
    on_timeout = models.CharField(max_length=8, choices=OnTimeout.choices, default=OnTimeout.FAIL)
    max_rounds = models.PositiveIntegerField(default=0, help_text="0 runs until stopped.")
    epochs = models.PositiveIntegerField(default=10)
    learning_rate = models.FloatField(default=0.01)
    batch_size = models.PositiveIntegerField(default=0, help_text="0 trains full-batch.")
    seed = models.PositiveIntegerField(default=0, help_text="Seed of the initial model.")
    update_max_norm = models.FloatField(
        null=True, blank=True, help_text="Bound on ||update − model||₂ checked before aggregation; empty: none."
    )
    update_norm_mode = models.CharField(max_length=8, choices=NormMode.choices, default=NormMode.REJECT)
    update_encoding = models.CharField(
        max_length=8, default="none",
        choices=[("none", "float32 (no compression)"), ("fp16", "fp16 delta"),
                 ("int8", "int8 delta, per-tensor scale")],
        help_text="How nodes compress the update they upload: none, fp16 or int8 (update minus the round's model).",
    )
    # Early stop: the run finishes once round metric `stop_metric` (e.g. val_accuracy, test_accuracy,
    # loss) is `stop_op` `stop_threshold` in `stop_patience` closed rounds in a row.
    stop_metric = models.CharField(max_length=64, blank=True, default="",
                                   help_text="Round metric that ends the run early, e.g. val_accuracy; empty: none.")
    stop_op = models.CharField(max_length=2, choices=StopOp.choices, default=StopOp.AT_LEAST)
    stop_threshold = models.FloatField(null=True, blank=True)
    stop_patience = models.PositiveIntegerField(default=1, help_text="Closed rounds in a row the condition must hold.")
    server_eval = models.CharField(
        max_length=500, blank=True, default="",
        help_text="Test set the server scores every new model on: digits, breast_cancer, wine, iris, diabetes or "
                  "csv:PATH; empty: none.",
    )
    server_eval_target = models.CharField(max_length=200, blank=True, default="",
                                          help_text="Label column of a csv: test set (default: the last column).")
    # How nodes with the built-in data pipeline scale their features, and the server its test set
    # (aggregation.fl.features): global = federated statistics combined before round 1.
    feature_scaling = models.CharField(
        max_length=8, default="global",
        choices=[("global", "global: the federation's pooled mean and deviation (federated statistics)"),
                 ("node", "node: each node its own mean and deviation"),
                 ("range", "range: the data set's fixed input range")],
        help_text="How the built-in data pipeline scales features, on the nodes and for the server's test set.",
    )
    # The combined scaling once fixed ({"shift", "scale", "nodes", "count"}); empty while reports come in.
    feature_stats = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    finish_reason = models.CharField(max_length=300, blank=True, default="",
                                     help_text="Why the run finished: max_rounds, or the stop condition that held.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Refuse a strategy or model the server could not run, with the reason, in the admin too."""
        from django.core.exceptions import ValidationError

        from aggregation.datasets import BUILTIN
        from aggregation.fl.manifest import spec_from_dict, spec_pending
        from aggregation.fl.model import MLPSpec
        from aggregation.fl.registry import strategy_create

        errors = {}
        try:
            strategy_create(self.strategy, self.strategy_params)
        except ValueError as exc:
            errors["strategy_params"] = str(exc)
        if not spec_pending(self.model_spec):  # no model yet (waiting for, or stopped before, the first node's)
            try:
                spec = spec_from_dict(self.model_spec)
            except (ValueError, TypeError) as exc:
                errors["model_spec"] = str(exc)
            else:
                if self.server_eval and not isinstance(spec, MLPSpec):
                    errors["server_eval"] = ("The server can only score the built-in MLP; a model of your own is "
                                             "scored by its nodes (federated evaluation).")
        if self.stop_metric and self.stop_threshold is None:
            errors["stop_threshold"] = "A stop metric needs a threshold."
        if self.server_eval and not (self.server_eval.startswith("csv:") or self.server_eval in BUILTIN):
            errors["server_eval"] = f"Choose one of {', '.join(BUILTIN)} or csv:PATH."
        if self.min_nodes > self.total_nodes:
            errors["min_nodes"] = "The quorum cannot be larger than total_nodes."
        if errors:
            raise ValidationError(errors)


class ModelVersion(models.Model):
    """Append-only: version v is the global model after v successful aggregations."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    round = models.OneToOneField(
        "Round", null=True, blank=True, on_delete=models.PROTECT, related_name="produced_version"
    )
    contributors = models.JSONField(default=list, blank=True)
    # Federated evaluation of this version: the example-weighted mean of what nodes reported.
    evaluation = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The blobs come last, so reads of the other columns never walk their pages (migration 0006).
    parameters = models.BinaryField()
    # The strategy's server-side state after this version (momentum, moments, clip norm) as
    # safetensors, so a restarted server continues with identical results. Empty: stateless.
    strategy_state = models.BinaryField(default=b"", blank=True)

    class Meta:
        ordering = ["experiment", "version"]
        constraints = [models.UniqueConstraint(fields=["experiment", "version"], name="unique_version")]

    def __str__(self) -> str:
        return f"{self.experiment.name} v{self.version}"


class Round(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        AGGREGATING = "aggregating"
        CLOSED = "closed"
        FAILED = "failed"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    base_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="rounds_based_on")
    opened_at = models.DateTimeField(auto_now_add=True)
    deadline = models.DateTimeField()
    aggregation_requested_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    failure_reason = models.TextField(blank=True, default="")
    # Nodes that could not train on this round's model, and why: {node_id: reason}.
    node_failures = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["experiment", "number"]
        constraints = [models.UniqueConstraint(fields=["experiment", "number"], name="unique_round_number")]

    def __str__(self) -> str:
        return f"{self.experiment.name} round {self.number}"


class Update(models.Model):
    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="updates")
    node = models.ForeignKey("nodes_app.Node", on_delete=models.PROTECT, related_name="updates")
    num_examples = models.PositiveIntegerField()
    metrics = models.JSONField(default=dict, blank=True)
    # Identifies the parameters: the digest of their canonical float32 safetensors encoding (no
    # metadata), whatever form they were sent in. `parameters` holds a float32 body as it was sent
    # (its metadata included, so its own digest may differ), or the canonical encoding of anything
    # else; `size` is its length.
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    # L2 norm of (update - the round's base model): how far this node moved the model.
    delta_norm = models.FloatField(null=True, blank=True)
    # Why validation left this update out of the aggregation (empty: it was used).
    rejected_reason = models.TextField(blank=True, default="")
    received_at = models.DateTimeField(auto_now_add=True)
    # Last, so reads of the other columns never walk the blob's pages (migration 0006).
    parameters = models.BinaryField()

    class Meta:
        ordering = ["round", "received_at"]
        constraints = [models.UniqueConstraint(fields=["round", "node"], name="one_update_per_node_and_round")]

    def __str__(self) -> str:
        return f"{self.round} from node {self.node.node_id}"  # the node's id, not its database key


class Evaluation(models.Model):
    """One node's score of a model version on its own held-out data (federated evaluation)."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="evaluations")
    node = models.ForeignKey("nodes_app.Node", on_delete=models.PROTECT, related_name="evaluations")
    loss = models.FloatField()
    num_examples = models.PositiveIntegerField()
    metrics = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["version", "id"]
        constraints = [models.UniqueConstraint(fields=["version", "node"], name="one_evaluation_per_node_and_version")]

    def __str__(self) -> str:
        return f"{self.version} scored by {self.node}"


class FeatureReport(models.Model):
    """One node's feature statistics for an experiment (count, per-feature sum and sum of squares), sent
    once before round 1; the server combines them into the experiment's feature_stats."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="feature_reports")
    node = models.ForeignKey("nodes_app.Node", on_delete=models.PROTECT, related_name="feature_reports")
    count = models.PositiveBigIntegerField()
    sum = models.JSONField()
    sum_sq = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment", "id"]
        constraints = [models.UniqueConstraint(fields=["experiment", "node"], name="one_feature_report_per_node")]

    def __str__(self) -> str:
        return f"{self.experiment.name} feature statistics from node {self.node.node_id}"
