"""DPO, a run kind: a policy tuned on preference pairs directly."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0027_project_dataset_licence'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='trainingrun',
            name='run_kind_valid',
        ),
        migrations.AlterField(
            model_name='trainingrun',
            name='kind',
            field=models.CharField(choices=[('reward', 'Reward model'), ('sft', 'Supervised fine-tuning'), ('ppo', 'PPO'), ('dpo', 'DPO'), ('generate', 'Generate responses'), ('evaluate', 'Evaluate versions'), ('score', 'Score responses'), ('critique', 'Critique and revise'), ('ai_feedback', 'AI feedback labels')], max_length=16),
        ),
        migrations.AddConstraint(
            model_name='trainingrun',
            constraint=models.CheckConstraint(condition=models.Q(('kind__in', ['reward', 'sft', 'ppo', 'dpo', 'generate', 'evaluate', 'score', 'critique', 'ai_feedback'])), name='run_kind_valid'),
        ),
    ]
