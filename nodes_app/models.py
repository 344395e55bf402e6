"""A node of the federation: its identity, its token (hashed) and its last contact."""
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class Node(models.Model):
    class Source(models.TextChoices):
        API = "api", "registered over the API"
        CLI = "cli", "created with createnode"
        ETCD = "etcd", "discovered in etcd"

    node_id = models.CharField(max_length=64, unique=True)
    address = models.CharField(max_length=200, blank=True, default="")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.API)
    last_seen = models.DateTimeField(null=True, blank=True, db_index=True)
    # True while the node's etcd lease is alive, False once it expired; None: not in discovery.
    discovery_alive = models.BooleanField(null=True, blank=True)
    # The experiment the node last polled, uploaded to or finished: the dashboard lists a node under it.
    experiment = models.ForeignKey("aggregation.Experiment", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", help_text="The experiment it last took part in.")
    # Set when the node said it left cleanly because its run ended; cleared when it trains or registers again.
    done_at = models.DateTimeField(null=True, blank=True)
    # What the node says about its data (data set, partitioning, row counts); it is never seen by the server.
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["node_id"]

    def __str__(self) -> str:
        return self.node_id

    @property
    def status(self) -> str:
        """done (left cleanly after its run ended), else online / stale / offline from the last contact."""
        if self.done_at is not None:
            return "done"
        if self.discovery_alive is False:
            return "offline"
        if self.discovery_alive:  # a live etcd lease is kept by the running node process
            return "online"
        if self.last_seen is None:
            return "offline"
        age = timezone.now() - self.last_seen
        if age <= timedelta(seconds=settings.FL_NODE_STALE_S):
            return "online"
        if age <= timedelta(seconds=settings.FL_NODE_OFFLINE_S):
            return "stale"
        return "offline"
