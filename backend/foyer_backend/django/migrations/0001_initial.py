import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="OutboxEntry",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(max_length=16)),
                ("key", models.CharField(help_text="the message id (publish) or a label (links)", max_length=128)),
                ("body", models.TextField(help_text="the JSON sent to the gateway")),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("next_try", models.DateTimeField(default=django.utils.timezone.now)),
                ("claim", models.CharField(blank=True, default="", help_text="the drainer sending it now", max_length=32)),
                ("last_error", models.TextField(blank=True, default="")),
                ("dead", models.BooleanField(default=False, help_text="refused in a way no retry changes (400, 404, 413): kept, not retried")),
            ],
            options={
                "verbose_name": "outbox entry",
                "verbose_name_plural": "outbox",
                "db_table": "foyer_outbox",
                "ordering": ["pk"],
                "indexes": [models.Index(fields=["dead", "id"], name="foyer_outbox_pending")],
            },
        ),
    ]
