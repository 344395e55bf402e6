"""Admin for the federation: lists, filters and search; parameter blobs shown as size and hash only.

Experiments are added through experiment_setup, the service the CLI and the API use, so an experiment
made here has its version 0 and round 1 (or waits for its first node) like any other.
"""
import json
from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from aggregation.fl.manifest import manifest_of, spec_from_dict
from aggregation.fl.model import MLPSpec
from aggregation.fl.registry import STRATEGIES
from aggregation.models import Evaluation, Experiment, ModelVersion, Round, Update
from aggregation.services.experiment_setup import OPTIONS, experiment_setup
from aggregation.services.experiments import experiment_env_fields
from aggregation.services.lifecycle import experiment_pause, experiment_reset, experiment_resume, experiment_stop
from fedsite.errors import ApplicationError

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldOpts
    from django_stubs_ext import WithAnnotations


class UpdateCount(TypedDict):
    n_updates: int

BLOB_HIDDEN = ("parameters",)
TENSORS_SHOWN = 12
JSON_SHOWN = 160  # characters of a JSON value shown inline; the whole value opens under it


def compact_json(value: Any) -> str | SafeString:
    """A JSON field on one short line (no spaces), the whole value folded under it when it is longer."""
    if value in (None, "", {}, []):
        return "-"
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(text) <= JSON_SHOWN:
        return format_html("<code>{}</code>", text)
    return format_html("<details><summary><code>{}…</code></summary><pre>{}</pre></details>", text[:JSON_SHOWN],
                       json.dumps(value, indent=1, sort_keys=True))


def json_display(field: str, description: str | None = None) -> Any:
    @admin.display(description=description or field.replace("_", " "))
    def show(self: admin.ModelAdmin, obj: Any) -> str | SafeString:
        return compact_json(getattr(obj, field))

    show.__name__ = f"{field}_json"
    return show


class HistoryAdmin(admin.ModelAdmin):
    """Rows the federation writes and nothing may rewrite: rounds, updates, versions, evaluations are never
    deleted from the admin (an experiment's lineage is append-only)."""

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ExperimentForm(forms.ModelForm):
    strategy = forms.ChoiceField(choices=[(name, name) for name in STRATEGIES])

    class Meta:
        model = Experiment
        fields = "__all__"


class ExperimentAddForm(ExperimentForm):
    """Creates the experiment with experiment_setup; a refusal of the service is the form's error.

    The form starts from the environment's defaults, as the CLI does, and passes on only the options
    the operator changed, so the service applies its own rules to the rest (e.g. no server-side
    scoring of a model of the operator's own).
    """

    init_file = forms.FileField(
        label="initial model (safetensors)", required=False,
        help_text="Version 0 is exactly this file's floating-point tensors (any model: PyTorch, Keras, numpy).",
    )
    init_from_node = forms.BooleanField(
        label="take the initial model from the first node", required=False,
        help_text="Version 0 will be the parameters of the first node to connect.",
    )
    model_spec = forms.JSONField(
        required=False,
        help_text='The built-in MLP, e.g. {"kind": "mlp", "layers": [4, 16, 3], "task": "classification"}; '
                  "empty: the environment's default. Leave it empty when the model comes from a file or a node.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        explicit = kwargs.get("initial") or {}
        super().__init__(*args, **kwargs)
        try:
            defaults = experiment_env_fields()
        except ApplicationError:
            defaults = {}  # experiment_setup says what is wrong with the configuration
        defaults.pop("model_spec", None)
        self.initial = {**self.initial, **defaults, **explicit}

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if self.errors:
            return cleaned  # fix the fields first: the service needs their values
        options = {name: cleaned[name] for name in OPTIONS if name in self.changed_data and name != "model_spec"}
        if cleaned.get("model_spec"):
            options["model_spec"] = cleaned["model_spec"]
        upload = cleaned.get("init_file")
        try:
            # Validates everything before writing; the admin's view wraps all of this in a transaction.
            self.instance = experiment_setup(
                name=cleaned["name"], init_file=upload.read() if upload else None,
                init_name=upload.name if upload else "", init_from_node=cleaned.get("init_from_node", False),
                **options,
            )
        except ApplicationError as exc:
            raise forms.ValidationError(exc.detail, code=exc.code) from None
        return cleaned

    def _post_clean(self) -> None:
        """Nothing left to check or build: experiment_setup validated and created the experiment."""


_STRATEGY: "tuple[str, _FieldOpts]" = (
    "Strategy", {"fields": ("strategy", "strategy_params", "update_max_norm", "update_norm_mode")})
_ROUNDS: "tuple[str, _FieldOpts]" = (
    "Rounds", {"fields": ("total_nodes", "min_nodes", "round_timeout_s", "on_timeout", "max_rounds")})
_TRAINING: "tuple[str, _FieldOpts]" = (
    "Node training", {"fields": ("epochs", "learning_rate", "batch_size", "seed", "update_encoding",
                                 "feature_scaling")})
_EVALUATION = ("server_eval", "server_eval_target", "stop_metric", "stop_op", "stop_threshold", "stop_patience")


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    add_form = ExperimentAddForm
    list_display = ("name", "status", "strategy", "total_nodes", "min_nodes", "round_timeout_s", "max_rounds",
                    "created_at")
    list_filter = ("status", "strategy")
    search_fields = ("name",)
    # The model of a running experiment cannot change under its versions.
    readonly_fields = ("name", "status", "model_summary", "model_spec_json")
    model_spec_json = json_display("model_spec", "model spec")
    fieldsets = (
        (None, {"fields": ("name", "status", "model_summary", "model_spec_json")}),
        _STRATEGY, _ROUNDS, _TRAINING,
        ("Evaluation and stopping", {"fields": (*_EVALUATION, "finish_reason")}),
    )
    add_fieldsets = (
        (None, {"fields": ("name",)}),
        ("Model", {"fields": ("init_file", "init_from_node", "model_spec"),
                   "description": "An initial safetensors file, the first node's parameters, or the built-in MLP."}),
        _STRATEGY, _ROUNDS, _TRAINING,
        ("Evaluation and stopping", {"fields": _EVALUATION}),
    )

    actions = ["pause_runs", "stop_runs", "resume_runs"]

    @admin.action(description="Pause the selected runs (nodes wait until they resume)")
    def pause_runs(self, request: HttpRequest, queryset: QuerySet) -> None:
        paused = [e.name for e in queryset if experiment_pause(e, f"{request.user} in the admin")]
        self.message_user(request, f"Paused: {', '.join(paused)}." if paused else "No running experiment selected.")

    @admin.action(description="Resume the selected runs from their latest model")
    def resume_runs(self, request: HttpRequest, queryset: QuerySet) -> None:
        try:
            resumed = [e.name for e in queryset if experiment_resume(e)]
        except ApplicationError as exc:
            self.message_user(request, exc.detail, level="error")
            return
        self.message_user(request, f"Resumed: {', '.join(resumed)}." if resumed else "Nothing to resume.")

    @admin.action(description="Stop the selected runs (nodes finish with the latest model)")
    def stop_runs(self, request: HttpRequest, queryset: QuerySet) -> None:
        stopped = [e.name for e in queryset if experiment_stop(e, f"stopped by {request.user} in the admin")]
        self.message_user(request, f"Stopped: {', '.join(stopped)}." if stopped else "No running experiment selected.")

    def get_fieldsets(self, request: HttpRequest, obj: Experiment | None = None) -> Any:
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Experiment | None = None) -> Any:
        if obj is None:
            return ()
        if obj.rounds.exists():  # its versions were made by this strategy: changing it would rewrite the run
            return (*self.readonly_fields, "strategy", "strategy_params")
        return self.readonly_fields

    def get_form(self, request: HttpRequest, obj: Experiment | None = None, change: bool = False,
                 **kwargs: Any) -> Any:
        if obj is None:
            kwargs = {"form": self.add_form, **kwargs}
        return super().get_form(request, obj, change, **kwargs)

    def save_model(self, request: HttpRequest, obj: Experiment, form: forms.ModelForm, change: bool) -> None:
        if change:  # an added experiment was created by experiment_setup in the form's clean()
            super().save_model(request, obj, form, change)

    @admin.display(description="model")
    def model_summary(self, obj: Experiment) -> str | SafeString:
        if obj.status == Experiment.Status.INITIALIZING:
            return "Waiting for the first node to connect: its parameters become version 0."
        try:
            spec = spec_from_dict(obj.model_spec)
        except (ValueError, TypeError) as exc:
            return f"The model spec cannot be read: {exc}"
        manifest = manifest_of(spec)
        kind = (f"built-in MLP {'-'.join(map(str, spec.layers))} ({spec.task})" if isinstance(spec, MLPSpec)
                else "the operator's own model")
        rows = format_html_join(
            "", "<br><code>{}</code> {}{}",
            ((t.name, "×".join(map(str, t.shape)) or "scalar",
              f" (file: {t.init_dtype})" if t.init_dtype != "F32" else "") for t in manifest.tensors[:TENSORS_SHOWN]),
        )
        more = len(manifest.tensors) - TENSORS_SHOWN
        return format_html("{}: {} tensors, {} parameters (float32){}{}", kind, len(manifest.tensors),
                           f"{manifest.num_params():,}", rows,
                           format_html("<br>... and {} more", more) if more > 0 else "")


class UpdateInline(admin.TabularInline):
    model = Update
    readonly_fields = ("node", "num_examples", "metrics_json", "delta_norm", "rejected_reason", "sha256", "size",
                       "received_at")
    exclude = (*BLOB_HIDDEN, "metrics")
    metrics_json = json_display("metrics")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Round)
class RoundAdmin(HistoryAdmin):
    list_display = ("__str__", "status", "base_version", "updates_received", "opened_at", "deadline", "closed_at")
    list_filter = ("status", "experiment")
    search_fields = ("experiment__name", "=number")
    # A round's status moves only through the services (a hand-set "closed" would have no model version);
    # an open round's deadline is the one thing an operator may change.
    readonly_fields = ("experiment", "number", "status", "base_version", "opened_at", "aggregation_requested_at",
                       "closed_at", "metrics_json", "failure_reason", "node_failures_json")
    exclude = ("metrics", "node_failures")
    inlines = [UpdateInline]
    metrics_json = json_display("metrics")
    node_failures_json = json_display("node_failures")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rounds are opened by the federation, never by hand

    def get_readonly_fields(self, request: HttpRequest, obj: Round | None = None) -> Any:
        if obj is not None and obj.status != Round.Status.OPEN:
            return (*self.readonly_fields, "deadline")  # history
        return self.readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("experiment", "base_version").annotate(
            n_updates=Count("updates"))

    @admin.display(description="updates", ordering="n_updates")
    def updates_received(self, obj: "WithAnnotations[Round, UpdateCount]") -> int:
        return obj.n_updates


class RejectedFilter(admin.SimpleListFilter):
    title = "validation"
    parameter_name = "rejected"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "rejected"), ("no", "used")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.exclude(rejected_reason="")
        if self.value() == "no":
            return queryset.filter(rejected_reason="")
        return queryset


@admin.register(Update)
class UpdateAdmin(HistoryAdmin):
    list_display = ("round", "node", "num_examples", "delta_norm", "accepted", "size", "sha256", "received_at")
    list_filter = ("round__experiment", "round__status", RejectedFilter)
    search_fields = ("node__node_id", "sha256")
    exclude = (*BLOB_HIDDEN, "metrics")
    readonly_fields = ("round", "node", "num_examples", "metrics_json", "delta_norm", "rejected_reason", "sha256",
                       "size", "received_at")
    list_select_related = ("round__experiment", "node")
    metrics_json = json_display("metrics")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # what a node sent is evidence

    @admin.display(boolean=True, description="used")
    def accepted(self, obj: Update) -> bool:
        return not obj.rejected_reason


@admin.register(ModelVersion)
class ModelVersionAdmin(HistoryAdmin):
    list_display = ("__str__", "size", "sha256", "parent", "round", "created_at")
    list_filter = ("experiment",)
    search_fields = ("sha256", "experiment__name")
    exclude = (*BLOB_HIDDEN, "contributors", "evaluation")
    readonly_fields = ("experiment", "version", "sha256", "size", "parent", "round", "contributors_json",
                       "evaluation_json", "created_at")
    contributors_json = json_display("contributors")
    evaluation_json = json_display("evaluation")
    list_select_related = ("experiment", "parent__experiment", "round__experiment")
    actions = ["roll_back_to"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the lineage is append-only

    @admin.action(description="Roll its experiment back to the selected version (a new version, a new round)")
    def roll_back_to(self, request: HttpRequest, queryset: QuerySet) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model version to roll back to.", level="error")
            return
        target = queryset.select_related("experiment").get()
        try:
            made = experiment_reset(target.experiment, target.version, by=f"{request.user} in the admin")
        except ApplicationError as exc:
            self.message_user(request, exc.detail, level="error")
            return
        self.message_user(request, f"{target.experiment.name}: v{made.version} has v{target.version}'s parameters; "
                                   "a new round is open on it.")


@admin.register(Evaluation)
class EvaluationAdmin(HistoryAdmin):
    """Nodes' scores of model versions, as they reported them; only the federation writes them."""

    list_display = ("version", "node", "loss", "num_examples", "received_at")
    list_filter = ("version__experiment",)
    exclude = ("metrics",)
    readonly_fields = ("metrics_json",)
    metrics_json = json_display("metrics")
    search_fields = ("node__node_id", "version__experiment__name")
    list_select_related = ("version__experiment", "node")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
