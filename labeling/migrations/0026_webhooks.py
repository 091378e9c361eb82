"""Webhooks and their deliveries, and the beat job (every 10 s) that announces judgements and completed tasks to
them in batches."""

import django.db.models.deletion
import labeling.models.webhooks
import uuid
from django.conf import settings
from django.db import migrations, models


TASK = "labeling.tasks.webhooks_tick_task"
SCHEDULE_NAME = "Announce judgements and completed tasks to webhooks"


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_ten_seconds, _ = IntervalSchedule.objects.get_or_create(every=10, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={"task": TASK, "interval": every_ten_seconds, "queue": "default", "enabled": True},
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0025_task_order_cursor'),
        ('django_celery_beat', '0019_alter_periodictasks_options'),
    ]

    operations = [
        migrations.CreateModel(
            name='Webhook',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('url', models.URLField(help_text='Receives a POST with a JSON body for each event.', max_length=500)),
                ('secret', models.CharField(default=labeling.models.webhooks.new_secret, help_text='Signs each body: the X-Studio-Signature-256 header is sha256=HMAC-SHA256(secret, body) in hex.', max_length=200)),
                ('events', models.JSONField(default=list, help_text='The events this URL receives.')),
                ('active', models.BooleanField(default=True)),
                ('judgements_cursor', models.BigIntegerField(default=0, editable=False)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('created_by', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('project', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='webhooks', to='labeling.project')),
            ],
            options={
                'ordering': ['project', 'id'],
            },
        ),
        migrations.CreateModel(
            name='WebhookDelivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event', models.CharField(choices=[('judgements.submitted', 'Judgements submitted (in batches)'), ('task.completed', 'Task completed'), ('run.started', 'Training run started'), ('run.finished', 'Training run finished'), ('run.failed', 'Training run failed'), ('model.registered', 'Model version registered'), ('model.current', 'Model version made current'), ('rater.paused', 'Rater paused')], max_length=32)),
                ('delivery_id', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ('body', models.TextField()),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('delivered', 'Delivered'), ('failed', 'Failed')], default='pending', max_length=16)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('response_code', models.PositiveIntegerField(blank=True, null=True)),
                ('response_body', models.TextField(blank=True, default='')),
                ('error', models.TextField(blank=True, default='')),
                ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('delivered_at', models.DateTimeField(blank=True, null=True)),
                ('webhook', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='labeling.webhook')),
            ],
            options={
                'verbose_name_plural': 'webhook deliveries',
                'ordering': ['-id'],
                'indexes': [models.Index(fields=['status', 'next_attempt_at'], name='delivery_due')],
            },
        ),
        migrations.RunPython(schedule, unschedule),
    ]
