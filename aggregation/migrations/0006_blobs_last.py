"""Move the parameter blobs to the end of their rows.

SQLite stores a row's columns in table order, and a multi-megabyte blob spills into a chain of
overflow pages: reading any column stored after it (sha256, size, received_at, created_at) walked
that chain, about 1 ms per 4 MB on every metadata read. With the blobs last, metadata reads that
leave them out never touch their pages. (SQLite rebuilds put ModelVersion's self-referencing
`parent` column after them whatever the order, so hot reads of versions defer `parent` too.) On
PostgreSQL the order does not matter and this is a plain copy.
"""
from django.db import migrations, models


def _constraints_now(apps, schema_editor) -> None:
    """PostgreSQL refuses ALTER TABLE after an UPDATE while deferred foreign-key checks are pending."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def _moved_last(model: str, field: str, definition: models.Field) -> list:
    old, table = f"{field}_before_0006", f"aggregation_{model}"
    return [
        migrations.RenameField(model, field, old),
        migrations.AddField(model, field, models.BinaryField(default=b"", blank=True)),
        migrations.RunPython(_constraints_now, _constraints_now),  # before the copy too: the reverse runs upwards
        migrations.RunSQL(f"UPDATE {table} SET {field} = {old}", reverse_sql=f"UPDATE {table} SET {old} = {field}"),
        migrations.RunPython(_constraints_now, _constraints_now),
        # A default on the old column lets the migration run backwards (re-adding it to filled tables).
        migrations.AlterField(model, old, models.BinaryField(default=b"", blank=True)),
        migrations.RemoveField(model, old),
        migrations.AlterField(model, field, definition),
    ]


class Migration(migrations.Migration):
    dependencies = [("aggregation", "0005_experiment_update_encoding")]

    operations = [
        *_moved_last("update", "parameters", models.BinaryField()),
        *_moved_last("modelversion", "parameters", models.BinaryField()),
        *_moved_last("modelversion", "strategy_state", models.BinaryField(default=b"", blank=True)),
    ]
