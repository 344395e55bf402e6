"""Admin for nodes: identity, address, status; the token hash is never shown."""
from django.contrib import admin

from nodes_app.models import Node


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("node_id", "address", "status", "last_seen", "source", "created_at")
    list_filter = ("source",)
    search_fields = ("node_id", "address")
    exclude = ("token_hash",)
    readonly_fields = ("last_seen", "created_at")
