"""The licence of a project's data, written into the cards of its Hugging Face datasets."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0026_webhooks'),
    ]

    operations = [
        migrations.AddField(
            model_name='project',
            name='dataset_licence',
            field=models.CharField(blank=True, default='', help_text="The licence of the project's data, as the Hugging Face Hub names licences (cc-by-4.0, mit, apache-2.0, ...): the license field of its datasets' cards. Empty: other.", max_length=64),
        ),
    ]
