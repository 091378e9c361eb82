"""The demo project that ``make run`` loads: real OpenAssistant prompts with their human rankings."""

import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.http import HttpRequest

from labeling.models import ComparisonTask, Demonstration, Judgement, Project, Prompt, Response, User

pytestmark = pytest.mark.django_db

TREES = Path(__file__).resolve().parents[2] / "labeling" / "demo_data" / "en_100_tree.jsonl"


def run_demo_setup(credentials: Path) -> str:
    out = StringIO()
    call_command("demo_setup", credentials=credentials, stdout=out)
    return out.getvalue()


def printed_passwords(output: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)\s+password: (\S+)", output))


def test_demo_setup_loads_the_oasst_sample_once_and_prints_working_passwords(tmp_path, client):
    credentials = tmp_path / "credentials.json"
    first = run_demo_setup(credentials)
    project = Project.objects.get(slug="oasst-demo")
    counts = (
        Prompt.objects.count(),
        Response.objects.count(),
        ComparisonTask.objects.count(),
        Judgement.objects.count(),
        Demonstration.objects.count(),
    )
    # 212 prompts with ranked replies (the sample's README) plus 250 plain prompts.
    assert counts[0] == 212 + 250
    oasst_tasks = ComparisonTask.objects.filter(keep_order=False)
    assert oasst_tasks.count() == 212
    assert ComparisonTask.objects.filter(is_gold=True).count() == 22
    assert Judgement.objects.filter(source="human").count() == 212 - 22
    sizes = {task.slots.count() for task in oasst_tasks}
    assert sizes == {2, 3, 4, 5, 6, 8, 9}
    # The evaluation: a seeded 11% of the prompts held out; the default policy's answer against the first
    # human reply on each eval prompt that has one, in a blinded pair; the AI labeller's verdict on each.
    assert Prompt.objects.filter(is_eval=True).count() == 51
    evaluation = ComparisonTask.objects.filter(keep_order=True)
    assert counts[2] == 212 + evaluation.count() and evaluation.count() == 23
    for task in evaluation:
        assert task.prompt.is_eval
        assert sorted(task.responses.values_list("origin", flat=True)) == ["human", "smollm2-135m-instruct"]
    assert Judgement.objects.filter(source="ai", task__in=evaluation).count() == 23
    shown_first = [task.response_ids()[0] for task in evaluation]
    assert abs(Response.objects.filter(pk__in=shown_first, origin="human").count() - 23 / 2) <= 1

    second = run_demo_setup(credentials)
    assert "already loaded" in second
    assert (
        Prompt.objects.count(),
        Response.objects.count(),
        ComparisonTask.objects.count(),
        Judgement.objects.count(),
        Demonstration.objects.count(),
    ) == counts
    assert User.objects.count() == 3

    passwords = printed_passwords(first)
    assert set(passwords) == {"admin", "rater1", "rater2"}
    assert printed_passwords(second) == passwords == json.loads(credentials.read_text())
    assert client.login(request=HttpRequest(), username="rater1", password=passwords["rater1"])
    page = client.get("/")
    assert page.status_code == 200
    assert project.name in page.content.decode()
    assert client.login(request=HttpRequest(), username="admin", password=passwords["admin"])
    assert client.get("/admin/labeling/comparisontask/").status_code == 200
    # The evaluation page is filled from the first visit: the AI labeller's leaderboard, until raters judge.
    evaluation_page = client.get(f"/admin/labeling/project/{project.pk}/evaluation/").content.decode()
    assert "judged by ai" in evaluation_page and 'data-version="smollm2-135m-instruct"' in evaluation_page


def test_demo_rankings_follow_the_human_ranks_of_the_sample(tmp_path):
    run_demo_setup(tmp_path / "credentials.json")
    with open(TREES, encoding="utf-8") as trees:
        first_tree = json.loads(next(trees))
    root = first_tree["prompt"]
    ranked = sorted((r for r in root["replies"] if r.get("rank") is not None), key=lambda r: r["rank"])

    task = ComparisonTask.objects.get(prompt__external_id=root["message_id"])
    by_oasst_id = {response.metadata["oasst_id"]: response.pk for response in task.responses.all()}
    expected = [[by_oasst_id[reply["message_id"]]] for reply in ranked]
    stored = task.gold_ranking if task.is_gold else task.judgements.get().ranking
    assert stored == expected
    # This first tree is model-written: its replies are credited to the model, not to a person.
    assert set(task.responses.values_list("origin", flat=True)) == {"chip20b"}
