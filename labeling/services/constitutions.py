"""Constitutions for Constitutional AI: importing one, choosing the default, and reviewing critique chains."""

from django.db import transaction

from labeling.errors import ApplicationError, Conflict
from labeling.models import User
from labeling.services.content import demonstration_create


@transaction.atomic
def constitution_import(*, name: str, data: bytes | str, description: str = "", make_default: bool = False):
    """A new constitution from JSON in one of the layouts ``labeling.constitution`` reads; nothing is written
    when the file is refused."""
    from labeling.constitution import ConstitutionFormatError, parse_constitution
    from labeling.models import Constitution, Principle

    name = name.strip()
    if not name:
        raise ApplicationError("Give the constitution a name.", {"fields": {"name": ["This field is required."]}})
    if Constitution.objects.filter(name=name).exists():
        raise Conflict(f"There is already a constitution named '{name}'.")
    try:
        principles = parse_constitution(data)
    except ConstitutionFormatError as error:
        raise ApplicationError(f"The constitution file was refused: {error}") from None
    constitution = Constitution.objects.create(name=name, description=description)
    Principle.objects.bulk_create(
        Principle(constitution=constitution, position=position, **principle)
        for position, principle in enumerate(principles)
    )
    if make_default:
        constitution_make_default(constitution=constitution)
    return constitution


@transaction.atomic
def constitution_make_default(*, constitution):
    from labeling.models import Constitution

    Constitution.objects.filter(is_default=True).exclude(pk=constitution.pk).update(is_default=False)
    Constitution.objects.filter(pk=constitution.pk).update(is_default=True)
    constitution.refresh_from_db()
    return constitution


@transaction.atomic
def critique_chain_review(*, chain, reviewer: User, action: str, text: str = ""):
    """A rater's review of a chain's final revision: accept it, accept an edit of it, or reject it. Accepting
    stores the text as a demonstration (origin ``cai``), so it exports as SFT data. Reviewed once."""
    from labeling.models import CritiqueChain

    chain = CritiqueChain.objects.select_for_update().get(pk=chain.pk)
    if chain.review_status != CritiqueChain.ReviewStatus.PENDING:
        raise Conflict("This chain has been reviewed already.")
    if action not in ("accept", "edit", "reject"):
        raise ApplicationError("The action is accept, edit or reject.", {"fields": {"action": ["Unknown action."]}})
    if action == "edit" and not text.strip():
        raise ApplicationError("An edit needs the edited text.", {"fields": {"text": ["This field is required."]}})
    chain.reviewed_by = reviewer
    if action == "reject":
        chain.review_status = CritiqueChain.ReviewStatus.REJECTED
    else:
        final = text.strip() if action == "edit" else chain.final_revision
        chain.review_status = (
            CritiqueChain.ReviewStatus.EDITED if action == "edit" else CritiqueChain.ReviewStatus.ACCEPTED
        )
        chain.reviewed_text = final if action == "edit" else ""
        chain.demonstration = demonstration_create(prompt=chain.prompt, text=final, author=reviewer, origin="cai")
    chain.save()
    return chain


@transaction.atomic
def constitution_default_ensure():
    """The shipped default constitution (made by a migration): created again if it was deleted, made the
    default if no other constitution is."""
    from labeling.constitution import DEFAULT_DESCRIPTION, DEFAULT_NAME, DEFAULT_PRINCIPLES
    from labeling.models import Constitution, Principle

    constitution, created = Constitution.objects.get_or_create(
        name=DEFAULT_NAME, defaults={"description": DEFAULT_DESCRIPTION}
    )
    if created:
        Principle.objects.bulk_create(
            Principle(constitution=constitution, position=position, name=name, critique_request=critique,
                      revision_request=revision, comparison_question=question)
            for position, (name, critique, revision, question) in enumerate(DEFAULT_PRINCIPLES)
        )  # fmt: skip
    if not Constitution.objects.filter(is_default=True).exists():
        constitution = constitution_make_default(constitution=constitution)
    return constitution
