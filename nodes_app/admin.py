"""Admin for nodes: identity, address, status (done once a node left cleanly); the token hash is never shown."""
from django.contrib import admin

from nodes_app.models import Node


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("node_id", "address", "status", "experiment", "last_seen", "done_at", "source", "created_at")
    list_filter = ("source", "experiment")
    list_select_related = ("experiment",)
    search_fields = ("node_id", "address")
    exclude = ("token_hash",)
    readonly_fields = ("last_seen", "done_at", "experiment", "data", "created_at")
