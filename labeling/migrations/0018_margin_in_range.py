"""Margins bounded: 0 to 3 in the database (1 to 3 from raters; imports may carry fractions and 0). Margins
stored above 3 before the bound (only possible through the API, which had no upper limit) are brought down to
3, the workbench's "much better", so that the constraint can be added."""

from django.db import migrations, models


def clamp(apps, schema_editor):
    apps.get_model("labeling", "Judgement").objects.filter(margin__gt=3.0).update(margin=3.0)


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0017_stale_runs_schedule'),
    ]

    operations = [
        migrations.RunPython(clamp, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name='judgement',
            name='judgement_margin_not_negative',
        ),
        migrations.AlterField(
            model_name='judgement',
            name='margin',
            field=models.FloatField(blank=True, help_text='How much better the winner is: 1 to 3 from raters, 0 to 3 imported.', null=True),
        ),
        migrations.AddConstraint(
            model_name='judgement',
            constraint=models.CheckConstraint(condition=models.Q(('margin__isnull', True), models.Q(('margin__gte', 0.0), ('margin__lte', 3.0)), _connector='OR'), name='judgement_margin_in_range'),
        ),
    ]
