"""The sequence fencing tokens are drawn from (kojo.locks.tokens), on PostgreSQL.

It starts above every token the Redis counter handed out before it (seeded from the clock in
microseconds, about 1.8e15 in 2026), so tokens keep increasing across the upgrade.
"""

from django.db import migrations

START = 4_000_000_000_000_000
BLOCK = 1000  # earlier versions reserved this many values per nextval()


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE SEQUENCE IF NOT EXISTS kojo_fencing_token START {START} INCREMENT {BLOCK} NO CYCLE"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP SEQUENCE IF EXISTS kojo_fencing_token")


class Migration(migrations.Migration):
    dependencies = [("kojo", "0007_cron_overflow")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
