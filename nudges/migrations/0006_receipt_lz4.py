"""A decision's receipt (about 3 kB of JSON) is compressed when it is stored: on PostgreSQL with
lz4 instead of the default pglz, which took 88 -> 64 us of the decision INSERT's 0.09 ms
(pg_stat_statements, docs/benchmarks.md). Rows already stored keep their compression; a
server built without lz4 keeps pglz. Nothing changes on SQLite."""

from django.db import migrations


def _lz4_available(schema_editor) -> bool:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def _compress(method: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql" or not _lz4_available(schema_editor):
            return
        table = schema_editor.quote_name(apps.get_model("nudges", "Decision")._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN receipt SET COMPRESSION {method}")

    return run


class Migration(migrations.Migration):
    dependencies = [("nudges", "0005_patient_indexes_in_composites")]

    operations = [migrations.RunPython(_compress("lz4"), _compress("pglz"))]
