"""The default constitution the product ships (``labeling.constitution.DEFAULT_PRINCIPLES``)."""

from django.db import migrations


def create_default(apps, schema_editor):
    from labeling.constitution import DEFAULT_DESCRIPTION, DEFAULT_NAME, DEFAULT_PRINCIPLES

    Constitution = apps.get_model("labeling", "Constitution")
    Principle = apps.get_model("labeling", "Principle")
    if Constitution.objects.filter(name=DEFAULT_NAME).exists():
        return
    constitution = Constitution.objects.create(
        name=DEFAULT_NAME, description=DEFAULT_DESCRIPTION, is_default=not Constitution.objects.filter(is_default=True).exists()
    )
    Principle.objects.bulk_create(
        Principle(constitution=constitution, position=position, name=name, critique_request=critique,
                  revision_request=revision, comparison_question=question)
        for position, (name, critique, revision, question) in enumerate(DEFAULT_PRINCIPLES)
    )  # fmt: skip


def remove_default(apps, schema_editor):
    from labeling.constitution import DEFAULT_NAME

    apps.get_model("labeling", "Constitution").objects.filter(name=DEFAULT_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("labeling", "0010_constitutional_ai")]

    operations = [migrations.RunPython(create_default, remove_default)]
