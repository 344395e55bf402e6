"""Migration 0006 moves the parameter blobs behind the metadata columns (SQLite) and keeps every byte."""
import hashlib

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE, AFTER = [("aggregation", "0005_experiment_update_encoding")], [("aggregation", "0006_blobs_last")]


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


def _columns(table):
    with connection.cursor() as cursor:
        return [c.name for c in connection.introspection.get_table_description(cursor, table)]


def test_blobs_survive_the_move_and_sit_behind_the_metadata():
    apps = _migrate(BEFORE)
    try:
        experiment = apps.get_model("aggregation", "Experiment").objects.create(name="m")
        blobs = [bytes(range(256)) * 4000, b"state" * 1000, bytes(reversed(range(256))) * 3000]
        version = apps.get_model("aggregation", "ModelVersion").objects.create(
            experiment=experiment, version=0, parameters=blobs[0], sha256=hashlib.sha256(blobs[0]).hexdigest(),
            size=len(blobs[0]), strategy_state=blobs[1])
        rnd = apps.get_model("aggregation", "Round").objects.create(experiment=experiment, number=1,
                                                                     base_version=version, deadline=timezone.now())
        node = apps.get_model("nodes_app", "Node").objects.create(node_id="n1")
        apps.get_model("aggregation", "Update").objects.create(round=rnd, node=node, parameters=blobs[2],
                                                               num_examples=3, sha256="x", size=len(blobs[2]))

        apps = _migrate(AFTER)

        moved = apps.get_model("aggregation", "ModelVersion").objects.get(experiment__name="m")
        assert (bytes(moved.parameters), bytes(moved.strategy_state)) == (blobs[0], blobs[1])
        assert bytes(apps.get_model("aggregation", "Update").objects.get(round__experiment__name="m").parameters) \
            == blobs[2]
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    if connection.vendor == "sqlite":  # PostgreSQL keeps large values out of line: its order does not matter
        update_columns = _columns("aggregation_update")
        assert update_columns[-1] == "parameters"
        version_columns = _columns("aggregation_modelversion")
        metadata = ("sha256", "size", "created_at", "round_id")
        assert version_columns.index("parameters") > max(version_columns.index(c) for c in metadata)
