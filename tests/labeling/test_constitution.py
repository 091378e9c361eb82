"""Constitutions: the default one, and importing the two JSON layouts (small fixtures of our own in them)."""

from pathlib import Path

import pytest

from labeling import services
from labeling.constitution import DEFAULT_NAME, ConstitutionFormatError, parse_constitution
from labeling.errors import ApplicationError, Conflict
from labeling.models import Constitution, Principle

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "constitution"


@pytest.mark.django_db
def test_the_default_constitution_covers_its_themes_with_both_examples_of_the_brief():
    constitution = Constitution.objects.get(is_default=True)
    assert constitution.name == DEFAULT_NAME
    principles = list(constitution.principles.all())
    assert len(principles) == 8
    names = {principle.name for principle in principles}
    assert {"Helpful", "Honest", "Harmless", "Non-discrimination", "Freedom, equality and brotherhood"} <= names
    questions = " ".join(principle.comparison_question for principle in principles)
    assert "freedom, equality and a sense of brotherhood" in questions
    assert "least racist, sexist and discriminatory" in questions
    for principle in principles:  # every default principle serves both stages
        assert principle.critique_request and principle.revision_request and principle.comparison_question


def test_critique_and_revision_pairs_become_principles_with_both_requests():
    principles = parse_constitution((FIXTURES / "critique_revision.json").read_bytes())
    assert principles == [
        {"name": "kind0", "critique_request": "Say where the assistant's last answer was unkind to the person.",
         "revision_request": "Rewrite the answer so that it is kind without losing any content.",
         "comparison_question": ""},
        {"name": "clear0",
         "critique_request": "Point out anything in the assistant's last answer that is hard to follow.",
         "revision_request": "Rewrite the answer in plain words and short sentences.", "comparison_question": ""},
    ]  # fmt: skip


@pytest.mark.parametrize("fixture", ["choose_list.json", "choose_objects.json"])
def test_choose_the_response_lists_become_comparison_principles(fixture):
    principles = parse_constitution((FIXTURES / fixture).read_bytes())
    assert all(p["critique_request"] == p["revision_request"] == "" for p in principles)
    assert all(p["comparison_question"].lower().startswith(("please choose", "choose")) for p in principles)
    assert len({p["name"] for p in principles}) == len(principles)  # names stay unique, even for repeats


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "Not JSON"),
        (b"[]", "holds no principles"),
        (b'[1, "x"]', "Principle 1: expected text"),
        (b'{"a": {"prompt": ["no marker"], "edit_request": "RevisionRequest: x"}}', "Entry 'a': no 'CritiqueRequest:'"),
        (b'{"a": {"edit_request": "x"}}', "Entry 'a': expected 'prompt' and 'edit_request'"),
    ],
)
def test_a_file_in_no_known_layout_is_refused_with_where(data, message):
    with pytest.raises(ConstitutionFormatError, match=message):
        parse_constitution(data)


@pytest.mark.django_db
def test_an_import_is_stored_whole_or_not_at_all_and_can_become_the_default():
    constitution = services.constitution_import(
        name="Kind and clear", data=(FIXTURES / "critique_revision.json").read_bytes(), make_default=True
    )
    assert [p.name for p in constitution.principles.all()] == ["kind0", "clear0"]
    assert Constitution.objects.get(is_default=True) == constitution
    with pytest.raises(Conflict, match="already a constitution named"):
        services.constitution_import(name="Kind and clear", data=b"[]")
    before = Principle.objects.count()
    with pytest.raises(ApplicationError, match="refused: Principle 2"):
        services.constitution_import(name="Broken", data=b'["fine", ""]')
    assert Principle.objects.count() == before and not Constitution.objects.filter(name="Broken").exists()


@pytest.mark.django_db
def test_admins_import_a_constitution_from_the_admin_and_edit_its_principles(admin_client):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    assert "Import from JSON" in admin_client.get(reverse("admin:labeling_constitution_changelist")).content.decode()
    upload = SimpleUploadedFile("choose.json", (FIXTURES / "choose_list.json").read_bytes())
    response = admin_client.post(
        reverse("admin:labeling_constitution_import"), {"name": "Choices", "file": upload, "description": ""}
    )
    constitution = Constitution.objects.get(name="Choices")
    assert response.status_code == 302 and constitution.principles.count() == 3
    page = admin_client.get(reverse("admin:labeling_constitution_change", args=[constitution.pk])).content.decode()
    assert "Please choose the response that is easier to follow." in page
    bad = SimpleUploadedFile("bad.json", b"{not json")
    page = admin_client.post(reverse("admin:labeling_constitution_import"), {"name": "Bad", "file": bad}).content
    assert b"Not JSON" in page and not Constitution.objects.filter(name="Bad").exists()


@pytest.mark.django_db
def test_a_rater_can_not_open_the_constitutions(client, rater):
    from django.urls import reverse

    client.force_login(rater)
    response = client.get(reverse("admin:labeling_constitution_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
