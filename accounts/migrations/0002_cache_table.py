from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor) -> None:
    # allauth's rate limits live in the cache; with the default database cache its table must
    # exist on every deployment, so `migrate` alone is enough to be safe.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]
    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
