"""Every table has an admin page that lists, filters and searches; labels are read-only there."""

from datetime import timedelta

import pytest
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from labeling import rendering, services
from labeling.models import (
    Assignment,
    CritiqueChain,
    CritiqueRound,
    DatasetSnapshot,
    ImportJob,
    Judgement,
    ModelVersion,
    Project,
    Response,
    ResponseScore,
    ReviewItem,
    RewardCheck,
    TaskProblemReport,
    TrainingRun,
)

pytestmark = pytest.mark.django_db

LABELING_MODELS = [model for model in admin.site._registry if model._meta.app_label == "labeling"]


def test_every_labeling_table_is_in_the_admin():
    from django.apps import apps

    assert set(LABELING_MODELS) == set(apps.get_app_config("labeling").get_models()) - {
        apps.get_model("labeling", "TaskResponse")
    }


@pytest.fixture
def populated(project, rater, make_task):
    task = make_task(k=3)
    services.judgement_create(task=task, rater=rater, ranking=[task.response_ids()], client_submission_id="j")
    services.demonstration_create(prompt=task.prompt, author=rater, text="An ideal reply.")
    TaskProblemReport.objects.create(task=task, rater=rater, message="The second answer is cut off.")
    now = timezone.now()
    Assignment.objects.create(task=task, rater=rater, leased_at=now, expires_at=now + timedelta(minutes=10))
    snapshot = DatasetSnapshot.objects.create(project=project, kind="ranking", path="r.jsonl", sha256="0" * 64)
    run = TrainingRun.objects.create(project=project, kind="reward", snapshot=snapshot, base_model="minilm-l6")
    version = ModelVersion.objects.create(
        project=project, kind="reward", name="rm-1", snapshot=snapshot, training_run=run
    )
    RewardCheck.objects.create(model_version=version, judgement=Judgement.objects.get(), agreed=1.0, pairs=3)
    ResponseScore.objects.create(model_version=version, response=Response.objects.first(), score=0.25)
    ImportJob.objects.create(project=project, file_name="a.jsonl", file_format="jsonl", status="running")
    services.webhook_create(project=project, url="https://ci.example.org/hook", events=["rater.paused"])
    services.rater_pause(project=project, rater=rater, reason="Answer checks failed.")  # a webhook delivery
    services.rater_stats_refresh(project=project)
    ReviewItem.objects.create(task=task, reason="No majority for the top response: Answer in dispute.")
    constitution = services.constitution_default_ensure()
    chain = CritiqueChain.objects.create(
        project=project, prompt=task.prompt, constitution=constitution, model_name="m", initial_response="a",
        final_revision="b",
    )  # fmt: skip
    CritiqueRound.objects.create(
        chain=chain, number=1, principle=constitution.principles.first(), critique="c", revision="b"
    )
    return task


@pytest.mark.parametrize("model", LABELING_MODELS, ids=lambda model: model.__name__)
def test_staff_can_list_search_and_open_every_table(admin_client, populated, model):
    opts = model._meta
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    assert admin_client.get(changelist).status_code == 200
    assert admin_client.get(changelist, {"q": "Answer"}).status_code == 200
    row = model.objects.first()
    assert row is not None
    assert (
        admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[row.pk])).status_code == 200
    )


def test_the_project_list_shows_counts(admin_client, populated, project):
    page = admin_client.get(reverse("admin:labeling_project_changelist")).content.decode()
    listed = Project.objects.get(pk=project.pk)
    assert listed.name in page
    assert 'class="field-task_count">1<' in page
    assert 'class="field-judgement_count">1<' in page


def test_searching_prompts_finds_text_inside_the_conversation(admin_client, populated):
    page = admin_client.get(reverse("admin:labeling_prompt_changelist"), {"q": "Question number"}).content.decode()
    assert "1 result" in page or "1 prompt" in page


def test_judgements_cannot_be_added_or_edited_in_the_admin(admin_client, populated):
    judgement = Judgement.objects.get()
    assert admin_client.get(reverse("admin:labeling_judgement_add")).status_code == 403
    response = admin_client.post(reverse("admin:labeling_judgement_change", args=[judgement.pk]), {"ranking": "[[1]]"})
    assert response.status_code == 403
    judgement.refresh_from_db()
    assert judgement.ranking == [populated.response_ids()]


def test_a_project_with_k_of_ten_is_refused_by_the_admin_form(admin_client, rater):
    response = admin_client.post(
        reverse("admin:labeling_project_add"),
        {
            "name": "Too wide",
            "slug": "too-wide",
            "compare_enabled": "on",
            "responses_per_task": 10,
            "overlap": 1,
            "gold_rate": 0,
            "lease_timeout": "00:10:00",
        },
    )
    assert response.status_code == 200
    assert "must lie between 2 and 9" in response.content.decode()
    assert not Project.objects.filter(slug="too-wide").exists()


def close_in_admin(client, action: str, *reports):
    return client.post(
        reverse("admin:labeling_taskproblemreport_changelist"),
        {"action": action, "_selected_action": [report.pk for report in reports]},
    )


@pytest.mark.parametrize("action, outcome", [("resolve", "resolved"), ("dismiss", "dismissed")])
def test_staff_resolve_or_dismiss_problem_reports_in_the_admin(admin_client, admin_user, populated, action, outcome):
    report = TaskProblemReport.objects.get()
    response = close_in_admin(admin_client, action, report)
    assert response.status_code == 302
    report.refresh_from_db()
    assert (report.outcome, report.closed_by) == (outcome, admin_user)
    assert timezone.now() - report.closed_at < timedelta(minutes=1)
    page = admin_client.get(response.url).content.decode()
    assert f"1 report(s) {outcome}; 1 task(s) back in the pool." in page


def test_the_report_list_opens_on_open_reports_and_says_which_tasks_are_held_back(
    admin_client, admin_user, populated, rater
):
    fixed = TaskProblemReport.objects.get()
    services.task_problem_report_resolve(report=fixed, closed_by=admin_user)
    services.task_problem_report_create(rater=rater, task_id=populated.pk, message="Answer C is empty.")
    changelist = reverse("admin:labeling_taskproblemreport_changelist")
    page = admin_client.get(changelist).content.decode()
    assert "Answer C is empty." in page and "The second answer is cut off." not in page
    assert "its task is held back" in page
    page = admin_client.get(changelist, {"outcome": "all"}).content.decode()
    assert "Answer C is empty." in page and "The second answer is cut off." in page
    page = admin_client.get(changelist, {"outcome": "resolved"}).content.decode()
    assert "Answer C is empty." not in page and "The second answer is cut off." in page
    # The resolved report's task is still held back: another report on it is open.
    assert page.count('alt="True"') == 1


def test_closing_one_of_two_open_reports_leaves_the_task_held_back(admin_client, populated, rater):
    services.task_problem_report_create(rater=rater, task_id=populated.pk, message="Answer C is empty.")
    first, second = TaskProblemReport.objects.order_by("id")
    response = close_in_admin(admin_client, "dismiss", first)
    page = admin_client.get(response.url).content.decode()
    assert "1 report(s) dismissed; 0 task(s) back in the pool, 1 still held back by other open reports." in page
    close_in_admin(admin_client, "resolve", first, second)
    assert set(TaskProblemReport.objects.values_list("outcome", flat=True)) == {"dismissed", "resolved"}


def test_a_rater_cannot_resolve_or_dismiss_reports_in_the_admin(client, populated, rater, password):
    client.login(request=HttpRequest(), username=rater.username, password=password)
    for action in ("resolve", "dismiss"):
        response = close_in_admin(client, action, TaskProblemReport.objects.get())
        assert response.status_code == 302 and reverse("admin:login") in response.url
    assert TaskProblemReport.objects.get().outcome == "open"


def test_text_edited_in_the_admin_is_stored_with_its_new_html(admin_client, populated):
    response = populated.prompt.responses.first()
    page = admin_client.post(
        reverse("admin:labeling_response_change", args=[response.pk]),
        {"prompt": response.prompt_id, "text": "**edited**", "origin": response.origin, "metadata": "{}"},
    )
    assert page.status_code == 302, page.content.decode()[:2000]
    response.refresh_from_db()
    assert response.html == rendering.html_for_storage("**edited**")

    prompt, others = populated.prompt, list(populated.prompt.responses.order_by("id"))
    inline = {"responses-TOTAL_FORMS": len(others), "responses-INITIAL_FORMS": len(others),
              "responses-MIN_NUM_FORMS": 0, "responses-MAX_NUM_FORMS": 1000}  # fmt: skip
    for index, other in enumerate(others):
        text = "*inline*" if index == 1 else other.text
        inline |= {f"responses-{index}-id": other.pk, f"responses-{index}-prompt": prompt.pk,
                   f"responses-{index}-text": text, f"responses-{index}-origin": other.origin}  # fmt: skip
    page = admin_client.post(
        reverse("admin:labeling_prompt_change", args=[prompt.pk]),
        {"project": prompt.project_id, "messages": '[{"role": "user", "content": "_new question_"}]',
         "source": prompt.source, "external_id": "", "metadata": "{}", **inline},
    )  # fmt: skip
    assert page.status_code == 302, page.content.decode()[:2000]
    prompt.refresh_from_db()
    assert prompt.messages_html == [rendering.html_for_storage("_new question_")]
    assert Response.objects.get(pk=others[1].pk).html == rendering.html_for_storage("*inline*")


def test_changing_a_tasks_required_judgements_in_the_admin_keeps_its_status_true(admin_client, make_task, rater):
    """Fewer judgements wanted than it has: the task is complete; more again: it is open for raters again."""
    task = make_task(k=2, required_judgements=2)
    services.judgement_create(task=task, rater=rater, ranking=[task.response_ids()], client_submission_id="one")
    task.refresh_from_db()
    assert task.status == "open"
    url = reverse("admin:labeling_comparisontask_change", args=[task.pk])

    def change(required: int, status: str):
        form = {"required_judgements": required, "status": status, **inline_management("slots")}
        response = admin_client.post(url, form)
        assert response.status_code == 302, response.content.decode()[:2000]
        task.refresh_from_db()
        return task.status

    assert change(1, "open") == "complete"
    assert change(3, "complete") == "open"
    # An admin who sets the status along with the number has the last word.
    assert change(4, "archived") == "archived"


def inline_management(prefix: str) -> dict:
    return {f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0, f"{prefix}-MIN_NUM_FORMS": 0,
            f"{prefix}-MAX_NUM_FORMS": 1000}  # fmt: skip
