"""Admin for the federation: lists, filters and search; parameter blobs shown as size and hash only."""
from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from aggregation.fl.registry import STRATEGIES
from aggregation.models import Experiment, ModelVersion, Round, Update

BLOB_HIDDEN = ("parameters",)


class ExperimentForm(forms.ModelForm):
    strategy = forms.ChoiceField(choices=[(name, name) for name in STRATEGIES])

    class Meta:
        model = Experiment
        fields = "__all__"


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    list_display = ("name", "status", "strategy", "total_nodes", "min_nodes", "round_timeout_s", "max_rounds",
                    "created_at")
    list_filter = ("status", "strategy")
    search_fields = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "status", "model_spec")}),
        ("Strategy", {"fields": ("strategy", "strategy_params", "update_max_norm", "update_norm_mode")}),
        ("Rounds", {"fields": ("total_nodes", "min_nodes", "round_timeout_s", "on_timeout", "max_rounds")}),
        ("Node training", {"fields": ("epochs", "learning_rate", "batch_size", "seed", "update_encoding")}),
        ("Evaluation and stopping", {"fields": ("server_eval", "server_eval_target", "stop_metric", "stop_op",
                                                "stop_threshold", "stop_patience", "finish_reason")}),
    )


class UpdateInline(admin.TabularInline):
    model = Update
    exclude = BLOB_HIDDEN
    readonly_fields = ("node", "num_examples", "metrics", "delta_norm", "rejected_reason", "sha256", "size",
                       "received_at")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = ("__str__", "status", "base_version", "updates_received", "opened_at", "deadline", "closed_at")
    list_filter = ("status", "experiment")
    search_fields = ("experiment__name", "=number")
    readonly_fields = ("experiment", "number", "base_version", "opened_at", "aggregation_requested_at",
                       "closed_at", "metrics", "failure_reason")
    inlines = [UpdateInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("experiment", "base_version").annotate(
            n_updates=Count("updates"))

    @admin.display(description="updates", ordering="n_updates")
    def updates_received(self, obj: Round) -> int:
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
class UpdateAdmin(admin.ModelAdmin):
    list_display = ("round", "node", "num_examples", "delta_norm", "accepted", "size", "sha256", "received_at")
    list_filter = ("round__experiment", "round__status", RejectedFilter)
    search_fields = ("node__node_id", "sha256")
    exclude = BLOB_HIDDEN
    readonly_fields = ("round", "node", "num_examples", "metrics", "delta_norm", "rejected_reason", "sha256", "size",
                       "received_at")
    list_select_related = ("round__experiment", "node")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(boolean=True, description="used")
    def accepted(self, obj: Update) -> bool:
        return not obj.rejected_reason


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "size", "sha256", "parent", "round", "created_at")
    list_filter = ("experiment",)
    search_fields = ("sha256", "experiment__name")
    exclude = BLOB_HIDDEN
    readonly_fields = ("experiment", "version", "sha256", "size", "parent", "round", "contributors", "created_at")
    list_select_related = ("experiment", "parent__experiment", "round__experiment")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the lineage is append-only
