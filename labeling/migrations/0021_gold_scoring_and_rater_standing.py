"""Gold scoring and raters' standing: each judgement on a gold task gets its score, projects get the gold rule's
settings, raters can be paused on a project. The PostgreSQL lease and submit functions change with it (copies in
``sql/``): a gold task has no slot limit and never completes, since every rater must be able to judge it once."""

from pathlib import Path

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


SQL = Path(__file__).resolve().parent / "sql"


def run_files(*names):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for name in names:
                schema_editor.execute((SQL / name).read_text(encoding="utf-8"))

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0020_import_skip_invalid"),
    ]

    operations = [
        migrations.CreateModel(
            name="RaterStanding",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "paused",
                    models.BooleanField(default=False, help_text="A paused rater gets no new task on this project."),
                ),
                (
                    "reason",
                    models.TextField(blank=True, help_text="Why the rater was paused, as they and the admins see it."),
                ),
                ("paused_at", models.DateTimeField(blank=True, null=True)),
                (
                    "reinstated_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="When an admin last reinstated the rater: the gold rule counts only gold tasks judged since.",
                        null=True,
                    ),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["project", "rater"],
            },
        ),
        migrations.AddField(
            model_name="judgement",
            name="gold_score",
            field=models.FloatField(
                blank=True,
                editable=False,
                help_text="On a gold task: how closely the ranking follows the expected one, 0 to 1 (the share of response pairs ordered alike; a tie on one side counts half).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="judgement",
            name="rater_paused",
            field=models.BooleanField(
                db_default=False,
                default=False,
                editable=False,
                help_text="Made by a rater who is paused on the project: left out of exports unless asked for.",
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="gold_first_tasks",
            field=models.PositiveSmallIntegerField(
                default=5,
                help_text="A new rater's first tasks are gold tasks, this many (while there are gold tasks they have not done); then the gold rate applies.",
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="gold_min_count",
            field=models.PositiveIntegerField(
                default=10,
                help_text="Pause a rater once they have judged at least this many gold tasks and the upper end of their gold score's 95% interval lies below the minimum score.",
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="gold_min_score",
            field=models.FloatField(
                default=0.6,
                help_text="The gold score (0..1) a rater must be able to reach; 0 never pauses anyone. A rater who orders pairs at random scores about 0.5.",
                validators=[
                    django.core.validators.MinValueValidator(0.0),
                    django.core.validators.MaxValueValidator(1.0),
                ],
            ),
        ),
        migrations.AddIndex(
            model_name="judgement",
            index=models.Index(
                condition=models.Q(("gold_score__isnull", False)),
                fields=["rater", "created_at"],
                name="judgement_gold_by_rater",
            ),
        ),
        migrations.AddConstraint(
            model_name="judgement",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("gold_score__isnull", True),
                    models.Q(("gold_score__gte", 0.0), ("gold_score__lte", 1.0)),
                    _connector="OR",
                ),
                name="judgement_gold_score_between_0_and_1",
            ),
        ),
        migrations.AddConstraint(
            model_name="project",
            constraint=models.CheckConstraint(
                condition=models.Q(("gold_min_score__gte", 0.0), ("gold_min_score__lte", 1.0)),
                name="project_gold_min_score_between_0_and_1",
            ),
        ),
        migrations.AddField(
            model_name="raterstanding",
            name="project",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="rater_standings", to="labeling.project"
            ),
        ),
        migrations.AddField(
            model_name="raterstanding",
            name="rater",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="standings", to=settings.AUTH_USER_MODEL
            ),
        ),
        migrations.AddField(
            model_name="raterstanding",
            name="reinstated_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddConstraint(
            model_name="raterstanding",
            constraint=models.UniqueConstraint(fields=("project", "rater"), name="rater_standing_once_per_project"),
        ),
        migrations.AddConstraint(
            model_name="raterstanding",
            constraint=models.CheckConstraint(
                condition=models.Q(("paused", False), ("paused_at__isnull", False), _connector="OR"),
                name="rater_standing_paused_has_time",
                violation_error_message="A paused rater has the time they were paused.",
            ),
        ),
        migrations.RunPython(
            run_files("0021_lease_next.sql", "0021_judgement_submit.sql"),
            run_files("0016_lease_next.sql", "0016_judgement_submit.sql"),
        ),
    ]
