"""The patient foreign keys of decision points, decisions, deliveries and events lose their
own index: each table has an index or unique constraint that leads with the patient, which
serves every lookup by patient (and the cascade), so the single-column index only cost an
extra index write per row. Written as DROP INDEX rather than Django's AlterField, which on
PostgreSQL would drop and re-validate the foreign key (a full scan under lock) and on SQLite
would copy each table."""

import django.db.models.deletion
from django.db import migrations, models

TABLES = {
    "decision": "decisions",
    "decisionpoint": "decision_points",
    "delivery": "deliveries",
    "event": "events",
}


def _names(apps, schema_editor):
    for model_name in TABLES:
        model = apps.get_model("nudges", model_name)
        table = model._meta.db_table
        yield table, schema_editor._create_index_name(table, ["patient_id"], suffix="")


def drop(apps, schema_editor):
    q = schema_editor.quote_name
    for _, name in _names(apps, schema_editor):
        schema_editor.execute(f"DROP INDEX IF EXISTS {q(name)}")


def create(apps, schema_editor):
    q = schema_editor.quote_name
    for table, name in _names(apps, schema_editor):
        schema_editor.execute(f"CREATE INDEX {q(name)} ON {q(table)} ({q('patient_id')})")


class Migration(migrations.Migration):
    dependencies = [
        ("nudges", "0004_batchrun_batchchunk"),
        ("patients", "0002_keys_sealed_fields_vault"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name=model_name,
                    name="patient",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name=related_name,
                        to="patients.patient",
                    ),
                )
                for model_name, related_name in TABLES.items()
            ],
            database_operations=[migrations.RunPython(drop, create)],
        )
    ]
