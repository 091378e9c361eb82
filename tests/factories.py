"""factory_boy factories for the tables tests build most often. Tasks go through the service, which
validates them the way production does."""

import factory
from django.contrib.auth.models import Group

from labeling import services
from labeling.models import Project, Prompt, Response, User
from labeling.permissions import RATERS_GROUP

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def rater(user, create, extracted, **kwargs):
        if create and extracted:
            user.groups.add(Group.objects.get_or_create(name=RATERS_GROUP)[0])
        if create:
            user.save()


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")

    @factory.post_generation
    def members(project, create, extracted, **kwargs):
        if create and extracted:
            project.members.set(extracted)


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    messages = factory.Sequence(lambda n: [{"role": "user", "content": f"Question number {n}?"}])
    source = "tests"


class ResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Response

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"Answer {n}.")
    origin = "human"


def task_create(*, project: Project, k: int = 2, **options):
    """A task on a fresh prompt of ``project`` with ``k`` fresh responses."""
    prompt = PromptFactory(project=project)
    responses = ResponseFactory.create_batch(k, prompt=prompt)
    return services.comparison_task_create(project=project, prompt=prompt, responses=responses, **options)
