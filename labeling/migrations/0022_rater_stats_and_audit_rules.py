"""The rater audit's tables (one row per rater and project, and the project's agreement, refreshed by a Celery beat
job every five minutes for the projects with new judgements), a project's own audit thresholds, the review queue
of tasks whose judgements disagree, each reward model's verdict on the judgements it held out, and snapshots of
the new consensus export."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


TASK = "labeling.tasks.rater_stats_refresh_task"
SCHEDULE_NAME = "Refresh the rater audit of projects with new judgements"


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_five_minutes, _ = IntervalSchedule.objects.get_or_create(every=300, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={"task": TASK, "interval": every_five_minutes, "queue": "default", "enabled": True},
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SCHEDULE_NAME).delete()


def reviewers_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name="reviewers")


def no_reviewers_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="reviewers").delete()


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0021_gold_scoring_and_rater_standing'),
        ('django_celery_beat', '0019_alter_periodictasks_options'),
    ]

    operations = [
        migrations.CreateModel(
            name='ProjectAgreement',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('figures', models.JSONField(default=dict, help_text='{"alpha": {...}, "kendall_tau_b": {...}, "weeks": [...]}')),
                ('refreshed_at', models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name='RaterStats',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('judgements', models.PositiveIntegerField(default=0)),
                ('compared', models.PositiveIntegerField(default=0, help_text='Two-response tasks ordered strictly.')),
                ('gold_count', models.PositiveIntegerField(default=0)),
                ('gold_mean', models.FloatField(blank=True, null=True)),
                ('gold_low', models.FloatField(default=0.0)),
                ('gold_high', models.FloatField(default=1.0)),
                ('position_share', models.FloatField(blank=True, help_text='Chose the response shown first.', null=True)),
                ('position_p', models.FloatField(default=1.0)),
                ('length_share', models.FloatField(blank=True, help_text='Chose the longer response.', null=True)),
                ('length_p', models.FloatField(default=1.0)),
                ('median_seconds', models.FloatField(blank=True, null=True)),
                ('fast_share', models.FloatField(blank=True, help_text='Faster than the text can be read.', null=True)),
                ('tie_rate', models.FloatField(default=0.0)),
                ('all_bad_rate', models.FloatField(default=0.0)),
                ('pairwise_agreement', models.FloatField(blank=True, help_text='With each other rater, per task.', null=True)),
                ('consensus_agreement', models.FloatField(blank=True, help_text='With the majority of the other raters of a task (leave-one-out).', null=True)),
                ('reward_agreement', models.FloatField(blank=True, help_text="Share of the pairs of this rater's judgements held out by the current reward model that it orders as the rater did.", null=True)),
                ('alpha', models.FloatField(blank=True, help_text="Krippendorff's α (ordinal) over the tasks this rater judged.", null=True)),
                ('kendall_tau_b', models.FloatField(blank=True, help_text="Mean Kendall's τ-b with the other raters of their tasks of three or more.", null=True)),
                ('weight', models.FloatField(default=1.0, help_text="The rater's weight in the ranking export and so in reward training (labeling.audit.trust_weights): 1 for a typical rater, 0 for one no better than chance.")),
                ('flag_count', models.PositiveSmallIntegerField(default=0)),
                ('details', models.JSONField(blank=True, default=dict, help_text='Everything the audit computed: flags, weekly series, test p-values.')),
                ('refreshed_at', models.DateTimeField()),
            ],
            options={
                'verbose_name_plural': 'rater stats',
                'ordering': ['project', 'rater'],
            },
        ),
        migrations.CreateModel(
            name='ReviewItem',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('reason', models.TextField(help_text='Why the task needs a reviewer, with the figures.')),
                ('status', models.CharField(choices=[('open', 'Waiting for a reviewer'), ('decided', 'Decided'), ('sent_back', 'Sent back for more judgements')], default='open', max_length=16)),
                ('ranking', models.JSONField(blank=True, help_text="The reviewer's final ranking: groups of response ids, best first.", null=True)),
                ('decided_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'ordering': ['created_at', 'id'],
            },
        ),
        migrations.CreateModel(
            name='RewardCheck',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('agreed', models.FloatField(help_text='Pairs the model orders as the judgement does (a tie in reward: half).')),
                ('pairs', models.PositiveIntegerField()),
            ],
        ),
        migrations.RemoveConstraint(
            model_name='datasetsnapshot',
            name='snapshot_kind_valid',
        ),
        migrations.AddField(
            model_name='project',
            name='audit_rules',
            field=models.JSONField(blank=True, default=dict, help_text='Thresholds of the rater audit that differ from the defaults, by name (the raters dashboard lists every rule and its value).'),
        ),
        migrations.AddField(
            model_name='project',
            name='review_agreement_min',
            field=models.FloatField(default=0.6, help_text='A completed task goes to the review queue when no response is first in more than half of its judgements, or (three or more responses) when its judgements agree on fewer than this share of response pairs (0..1; two random rankings agree on about half).', validators=[django.core.validators.MinValueValidator(0.0), django.core.validators.MaxValueValidator(1.0)]),
        ),
        migrations.AddField(
            model_name='project',
            name='review_scanned_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Tasks completed before this were checked for review.', null=True),
        ),
        migrations.AlterField(
            model_name='datasetsnapshot',
            name='kind',
            field=models.CharField(choices=[('preference', 'Preference pairs'), ('ranking', 'Rankings'), ('consensus', 'Consensus rankings (one per task)'), ('sft', 'Demonstrations (SFT)'), ('hh', 'HH-RLHF transcripts'), ('prompts', 'Prompts')], max_length=16),
        ),
        migrations.AddConstraint(
            model_name='datasetsnapshot',
            constraint=models.CheckConstraint(condition=models.Q(('kind__in', ['preference', 'ranking', 'consensus', 'sft', 'hh', 'prompts'])), name='snapshot_kind_valid'),
        ),
        migrations.AddField(
            model_name='projectagreement',
            name='project',
            field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='agreement', to='labeling.project'),
        ),
        migrations.AddField(
            model_name='raterstats',
            name='project',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='rater_stats', to='labeling.project'),
        ),
        migrations.AddField(
            model_name='raterstats',
            name='rater',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='rater_stats', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='reviewitem',
            name='decided_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='reviewitem',
            name='task',
            field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='review', to='labeling.comparisontask'),
        ),
        migrations.AddField(
            model_name='rewardcheck',
            name='judgement',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='reward_checks', to='labeling.judgement'),
        ),
        migrations.AddField(
            model_name='rewardcheck',
            name='model_version',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='reward_checks', to='labeling.modelversion'),
        ),
        migrations.AddConstraint(
            model_name='raterstats',
            constraint=models.UniqueConstraint(fields=('project', 'rater'), name='rater_stats_once_per_project'),
        ),
        migrations.AddIndex(
            model_name='reviewitem',
            index=models.Index(fields=['status', 'created_at'], name='review_item_queue'),
        ),
        migrations.AddConstraint(
            model_name='reviewitem',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['open', 'decided', 'sent_back'])), name='review_item_status_valid'),
        ),
        migrations.AddConstraint(
            model_name='reviewitem',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('status', 'decided'), _negated=True), ('ranking__isnull', False), _connector='OR'), name='review_item_decided_has_ranking', violation_error_message='A decided review has its final ranking.'),
        ),
        migrations.AddConstraint(
            model_name='rewardcheck',
            constraint=models.UniqueConstraint(fields=('model_version', 'judgement'), name='reward_check_once_per_judgement'),
        ),
        migrations.AddConstraint(
            model_name='rewardcheck',
            constraint=models.CheckConstraint(condition=models.Q(('agreed__gte', 0.0), ('agreed__lte', models.F('pairs'))), name='reward_check_agreed_in_range'),
        ),
        migrations.RunPython(schedule, unschedule),
        migrations.RunPython(reviewers_group, no_reviewers_group),
    ]
