"""Admin for the federation: lists, filters and search; parameter blobs shown as size and hash only."""
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from aggregation.models import Experiment, ModelVersion, Round, Update

BLOB_HIDDEN = ("parameters",)


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "strategy", "total_nodes", "min_nodes", "round_timeout_s", "max_rounds",
                    "created_at")
    list_filter = ("status", "strategy")
    search_fields = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "status", "model_spec")}),
        ("Strategy", {"fields": ("strategy", "strategy_params")}),
        ("Rounds", {"fields": ("total_nodes", "min_nodes", "round_timeout_s", "on_timeout", "max_rounds")}),
        ("Node training", {"fields": ("epochs", "learning_rate", "batch_size", "seed")}),
    )


class UpdateInline(admin.TabularInline):
    model = Update
    exclude = BLOB_HIDDEN
    readonly_fields = ("node", "num_examples", "metrics", "sha256", "size", "received_at")
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


@admin.register(Update)
class UpdateAdmin(admin.ModelAdmin):
    list_display = ("round", "node", "num_examples", "size", "sha256", "received_at")
    list_filter = ("round__experiment", "round__status")
    search_fields = ("node__node_id", "sha256")
    exclude = BLOB_HIDDEN
    readonly_fields = ("round", "node", "num_examples", "metrics", "sha256", "size", "received_at")
    list_select_related = ("round__experiment", "node")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


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
