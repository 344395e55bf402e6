"""Move the parameter blobs to the end of their rows (SQLite).

SQLite stores a row's columns in table order, and a multi-megabyte blob spills into a chain of
overflow pages: reading any column stored after it (sha256, size, received_at, created_at) walked
that chain, about 1 ms per 4 MB on every metadata read. The fields move last in the model state,
and SQLite rebuilds each table once in that order, so metadata reads that leave the blobs out never
touch their pages. (A rebuild puts ModelVersion's self-referencing `parent` column after them
whatever the order, so hot reads of versions defer `parent` too.) PostgreSQL stores large values
out of line and column order does not matter there: nothing is rewritten.

Upgrading a large SQLite database needs free disk for one copy of its biggest table; VACUUM
afterwards returns the freed pages.
"""
from django.db import migrations, models


def _moved_last(model: str, field: str, definition: models.Field) -> migrations.SeparateDatabaseAndState:
    """Move `field` to the end of `model`'s fields in the migration state only."""
    return migrations.SeparateDatabaseAndState(state_operations=[
        migrations.RemoveField(model, field),
        migrations.AddField(model, field, definition),
    ])


def _rebuild_in_state_order(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "sqlite":
        return
    for name in ("Update", "ModelVersion"):
        # The SQLite schema editor's own table rebuild (what every ALTER there uses): the new
        # table takes the order of the model's fields, and the rows are copied by column name.
        schema_editor._remake_table(apps.get_model("aggregation", name))


class Migration(migrations.Migration):
    dependencies = [("aggregation", "0005_experiment_update_encoding")]

    operations = [
        _moved_last("update", "parameters", models.BinaryField()),
        _moved_last("modelversion", "parameters", models.BinaryField()),
        _moved_last("modelversion", "strategy_state", models.BinaryField(default=b"", blank=True)),
        # Backwards there is nothing to undo: the column order is invisible to the code.
        migrations.RunPython(_rebuild_in_state_order, migrations.RunPython.noop),
    ]
