"""Raters' gold record and standing: gold scores, gold tasks first for a new rater, the gold rule that pauses a
rater, reinstatement, what exports leave out, and who sees which figures."""

import json
import random
import re
from datetime import timedelta

import pytest
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from labeling import agreement, quality, selectors, services
from labeling.errors import ApplicationError
from labeling.models import ComparisonTask, Judgement, ProjectAgreement, RaterStanding, RaterStats, User
from tests.factories import PASSWORD, ProjectFactory, PromptFactory, ResponseFactory, UserFactory, task_create

pytestmark = pytest.mark.django_db


# --- the arithmetic ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ranking, expected, score",
    [
        ([[1], [2]], [[1], [2]], 1.0),
        ([[2], [1]], [[1], [2]], 0.0),
        ([[1, 2]], [[1], [2]], 0.5),  # the rater ties what the gold orders
        ([[1], [2]], [[1, 2]], 0.5),  # the gold ties what the rater orders
        ([[1, 2]], [[1, 2]], 1.0),
        # K = 3: of the pairs (1,2), (1,3), (2,3) the rater swaps only (2,3)
        ([[1], [3], [2]], [[1], [2], [3]], 2 / 3),
        # K = 4, all reversed but one tie: 5 pairs reversed, 1 tied -> 0.5 / 6
        ([[4], [3], [1, 2]], [[1], [2], [3], [4]], 0.5 / 6),
    ],
)
def test_a_gold_score_is_the_share_of_pairs_ordered_as_expected_ties_counting_half(ranking, expected, score):
    assert quality.gold_score(ranking, expected) == pytest.approx(score)


def test_the_wilson_interval_matches_the_textbook_values_and_narrows_with_more_trials():
    assert quality.wilson_interval(0.5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert quality.wilson_interval(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert quality.wilson_interval(1.0, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert quality.wilson_interval(0.8, 0) == (0.0, 1.0)
    widths = [high - low for low, high in (quality.wilson_interval(0.7, n) for n in (5, 20, 80, 320))]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.11


# --- the product ------------------------------------------------------------------------------------------------


def gold_task(project, *, k=2, required_judgements=1):
    task = task_create(project=project, k=k, required_judgements=required_judgements)
    ids = task.response_ids()
    ComparisonTask.objects.filter(pk=task.pk).update(is_gold=True, gold_ranking=[[i] for i in ids])
    return ComparisonTask.objects.get(pk=task.pk)


def submit(lease, rater, *, correct: bool):
    """Judge a leased task: on a gold task, as the gold ranking says (``correct``) or reversed."""
    task = ComparisonTask.objects.get(pk=lease.task_id)
    ids = task.response_ids()
    ranking = [[i] for i in ids] if correct else [[i] for i in reversed(ids)]
    judgement, created = services.judgement_submit(
        rater=rater, task_id=lease.task_id, client_submission_id=f"q-{rater.pk}-{lease.task_id}", ranking=ranking
    )
    assert created
    return judgement


@pytest.fixture
def gold_project(project):
    project.gold_first_tasks, project.gold_rate = 0, 1.0
    project.gold_min_count, project.gold_min_score = 3, 0.6
    project.save()
    return project


def test_a_judgement_on_a_gold_task_is_scored_and_one_on_a_plain_task_is_not(project, rater):
    project.gold_first_tasks = 1
    project.save()
    plain = task_create(project=project, k=3)
    gold = gold_task(project, k=3)
    lease = services.assignment_lease_next(project=project, rater=rater)
    assert lease.task_id == gold.pk  # the first task of a new rater is a gold one, though the plain one is older
    ids = gold.response_ids()
    judgement, _ = services.judgement_submit(
        rater=rater, task_id=gold.pk, client_submission_id="g1", ranking=[[ids[0]], [ids[2]], [ids[1]]]
    )
    assert Judgement.objects.get(pk=judgement.pk).gold_score == pytest.approx(2 / 3)
    lease = services.assignment_lease_next(project=project, rater=rater)
    assert lease.task_id == plain.pk
    assert Judgement.objects.get(pk=submit(lease, rater, correct=True).pk).gold_score is None


def test_a_new_raters_first_tasks_are_gold_then_the_gold_rate_applies(project, rater):
    project.gold_first_tasks, project.gold_rate = 2, 0.0
    project.save()
    plain = [task_create(project=project, k=2) for _ in range(2)]
    gold = [gold_task(project) for _ in range(3)]
    handed = []
    for _ in range(4):
        lease = services.assignment_lease_next(project=project, rater=rater)
        handed.append(lease.task_id)
        submit(lease, rater, correct=True)
    assert handed == [gold[0].pk, gold[1].pk, plain[0].pk, plain[1].pk]


def test_every_rater_may_judge_a_gold_task_once_and_it_stays_open(gold_project):
    task = gold_task(gold_project, required_judgements=1)
    raters = UserFactory.create_batch(3, rater=True)
    gold_project.members.add(*raters)
    for rater in raters:
        lease = services.assignment_lease_next(project=gold_project, rater=rater)
        assert lease.task_id == task.pk
        submit(lease, rater, correct=True)
        assert services.assignment_lease_next(project=gold_project, rater=rater) is None
    task.refresh_from_db()
    assert task.status == ComparisonTask.Status.OPEN and task.judgements.count() == 3


def test_a_rater_under_the_gold_minimum_is_paused_marked_left_out_and_reinstated(gold_project, rater, staff_api):
    careful = UserFactory(username="careful", rater=True)
    gold_project.members.add(careful)
    for _ in range(5):
        gold_task(gold_project)
    plain = task_create(project=gold_project, k=2, required_judgements=2)

    # The careful rater judges every gold task as expected: never paused.
    for _ in range(5):
        submit(services.assignment_lease_next(project=gold_project, rater=careful), careful, correct=True)
    assert not RaterStanding.objects.filter(rater=careful).exists()

    # The other reverses them: after three (the minimum count) the interval's upper end, 0.56, is under 0.6.
    for number in range(3):
        assert not RaterStanding.objects.filter(rater=rater, paused=True).exists(), number
        submit(services.assignment_lease_next(project=gold_project, rater=rater), rater, correct=False)
    standing = RaterStanding.objects.get(rater=rater, project=gold_project)
    assert standing.paused and "3 gold tasks" in standing.reason and "0.60" in standing.reason
    assert set(Judgement.objects.filter(rater=rater).values_list("rater_paused", flat=True)) == {True}
    assert set(Judgement.objects.filter(rater=careful).values_list("rater_paused", flat=True)) == {False}

    # The next-task call answers with the reason and no task.
    client = APIClient()
    client.force_authenticate(rater)
    refused = client.post(f"/api/v1/projects/{gold_project.slug}/tasks/next")
    assert refused.status_code == 403
    assert refused.json()["message"].startswith(f"You are paused on {gold_project.name}: Your mean score")

    # Exports leave the paused rater's judgements out unless asked.
    def exported(**query):
        url = f"/api/v1/projects/{gold_project.slug}/exports/ranking"
        response = staff_api.get(url, query)
        assert response.status_code == 200
        return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]

    assert len(exported()) == 5
    assert len(exported(paused="include")) == 8
    assert len(exported(paused="only")) == 3

    # An admin reinstates them from the standing list: tasks again, judgements counted again, a fresh record.
    admin_client = staff_api
    staff = UserFactory(username="admin2", is_staff=True, is_superuser=True)
    admin_client = APIClient()
    admin_client.login(request=HttpRequest(), username=staff.username, password=PASSWORD)
    page = admin_client.get(reverse("admin:labeling_raterstanding_changelist") + "?paused__exact=1")
    assert (
        page.status_code == 200 and "rater" in page.content.decode() and "0.00 (0.00 to 0.56)" in page.content.decode()
    )
    done = admin_client.post(
        reverse("admin:labeling_raterstanding_changelist"),
        {"action": "reinstate", "_selected_action": [standing.pk]},
    )
    assert done.status_code == 302
    standing.refresh_from_db()
    assert not standing.paused and standing.reinstated_by == staff
    assert len(exported()) == 8
    lease = services.assignment_lease_next(project=gold_project, rater=rater)
    assert lease is not None
    # One reversed gold task after reinstatement is under the minimum count: not paused again yet.
    submit(lease, rater, correct=False)
    assert not RaterStanding.objects.get(pk=standing.pk).paused
    assert services.assignment_lease_next(project=gold_project, rater=rater).task_id in {
        *ComparisonTask.objects.filter(is_gold=True).values_list("pk", flat=True),
        plain.pk,
    }


def test_a_gold_minimum_of_zero_never_pauses(gold_project, rater):
    gold_project.gold_min_score = 0.0
    gold_project.save()
    for _ in range(4):
        gold_task(gold_project)
    for _ in range(4):
        submit(services.assignment_lease_next(project=gold_project, rater=rater), rater, correct=False)
    assert not RaterStanding.objects.exists()


def test_a_rater_sees_their_own_figures_and_never_anyone_elses(client, gold_project, rater, other_rater):
    gold_project.gold_min_score = 0.0  # nobody paused: the figures alone
    gold_project.gold_min_count = 5
    gold_project.save()
    gold_project.members.add(other_rater)
    for _ in range(6):
        gold_task(gold_project)
    for _ in range(6):
        submit(services.assignment_lease_next(project=gold_project, rater=rater), rater, correct=True)
    for _ in range(2):
        submit(services.assignment_lease_next(project=gold_project, rater=other_rater), other_rater, correct=False)

    client.login(request=HttpRequest(), username="rater", password=PASSWORD)
    page = client.get(reverse("frontend:projects")).content.decode()
    assert "6 judged, 6 in the last 7 days" in page
    assert "Gold score 1.00 on 6 check tasks" in page
    client.logout()
    client.login(request=HttpRequest(), username="other", password=PASSWORD)
    page = client.get(reverse("frontend:projects")).content.decode()
    assert "2 judged" in page and "6 judged" not in page
    assert "Gold score" not in page  # two gold tasks are too few to show
    # Neither reaches the standing list.
    response = client.get(reverse("admin:labeling_raterstanding_changelist"))
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_a_paused_raters_page_says_why(client, gold_project, rater):
    services.rater_pause(project=gold_project, rater=rater, reason="Too many checks failed.")
    client.login(request=HttpRequest(), username="rater", password=PASSWORD)
    page = client.get(reverse("frontend:projects")).content.decode()
    assert "Paused:</strong> Too many checks failed." in page


# --- the rater audit ------------------------------------------------------------------------------------------


def simulated_project(project, seed: int = 7, tasks: int = 200):
    """``tasks`` two-response tasks whose better response is known (longer in 60% of them), judged by four
    careful raters (right 85% of the time), one who always picks the response shown first, one who always picks
    the longer one and one who picks at random without reading (in 1 to 5 seconds). Returns the raters by
    behaviour."""
    rng = random.Random(seed)
    behaviours = ["careful"] * 4 + ["first", "longer", "random"]
    raters = {
        f"{kind}{index}": UserFactory(username=f"{kind}{index}", rater=True) for index, kind in enumerate(behaviours)
    }
    project.members.add(*raters.values())
    judgements = []
    for number in range(tasks):
        prompt = PromptFactory(project=project)
        short, long = rng.randint(20, 200), rng.randint(220, 900)
        better_is_longer = rng.random() < 0.6
        texts = ["L" * long, "S" * short] if better_is_longer else ["S" * short, "L" * long]
        responses = [ResponseFactory(prompt=prompt, text=text) for text in texts]  # responses[0] is the better
        task = services.comparison_task_create(project=project, prompt=prompt, responses=responses)
        better, worse = responses[0].pk, responses[1].pk
        longer = responses[0].pk if better_is_longer else responses[1].pk
        for name, rater in raters.items():
            shown = [better, worse] if rng.random() < 0.5 else [worse, better]
            if name.startswith("careful"):
                winner = better if rng.random() < 0.85 else worse
            elif name.startswith("first"):
                winner = shown[0]
            elif name.startswith("longer"):
                winner = longer
            else:
                winner = rng.choice(shown)
            loser = worse if winner == better else better
            judgements.append(
                Judgement(
                    task=task, rater=rater, ranking=[[winner], [loser]], shown_order=shown,
                    seconds_spent=rng.uniform(1, 5) if name.startswith("random") else rng.uniform(30, 90),
                    client_submission_id=f"sim-{number}",
                )
            )  # fmt: skip
    Judgement.objects.bulk_create(judgements)
    return raters


def test_the_audit_flags_position_and_length_bias_and_a_random_rater_but_no_careful_one(project):
    raters = simulated_project(project)
    assert services.rater_stats_refresh(project=project) == 7
    stats = {row.rater.username: row for row in RaterStats.objects.filter(project=project).select_related("rater")}
    flagged = {name: [flag.split(":")[0] for flag in row.flags] for name, row in stats.items()}
    # A rater who picks by position or length also sides with the majority only by chance: both rules fire.
    assert "Position bias" in flagged["first4"] and "Length bias" not in flagged["first4"]
    assert "Length bias" in flagged["longer5"] and "Position bias" not in flagged["longer5"]
    assert flagged["random6"] == ["Low agreement", "Too fast"]
    assert all(flagged[name] == [] for name in raters if name.startswith("careful"))
    assert stats["first4"].position_share == 1.0 and stats["first4"].position_p < 1e-50
    assert stats["longer5"].length_share == 1.0
    careful = stats["careful0"]
    assert careful.judgements == careful.compared == 200
    assert 0.4 < careful.position_share < 0.6 and 0.75 < careful.consensus_agreement <= 0.95
    assert 30 <= careful.median_seconds <= 90 and careful.fast_share == 0.0
    assert sum(week["judgements"] for week in careful.weekly) == 200
    # The flags state the rule they apply.
    assert "(rule: 65% or more, p < 0.001" in stats["first4"].flags[0]


def test_a_projects_own_thresholds_change_the_flags_and_bad_ones_are_refused(project):
    simulated_project(project, tasks=60)
    project.audit_rules = {"consensus_min": 0.0, "position_share": 1.01, "fast_share": 1.01}
    project.save()
    services.rater_stats_refresh(project=project)
    assert set(RaterStats.objects.filter(flag_count__gt=0).values_list("rater__username", flat=True)) == {"longer5"}
    for bad in ({"consensus": 0.5}, {"consensus_min": "high"}, {"fast_share": -1}, ["consensus_min"]):
        project.audit_rules = bad
        with pytest.raises(ApplicationError, match="audit_rules"):
            services.project_update(project=project, audit_rules=bad)


def test_the_beat_job_refreshes_only_projects_with_new_judgements(project, rater):
    from django_celery_beat.models import PeriodicTask

    assert PeriodicTask.objects.get(task="labeling.tasks.rater_stats_refresh_task").interval.every == 300
    quiet = ProjectFactory(members=[rater])
    simulated_project(project, tasks=5)
    assert services.rater_stats_refresh_due() == [project.pk]
    assert services.rater_stats_refresh_due() == []  # nothing new since
    task = task_create(project=quiet, k=2)
    ids = task.response_ids()
    Judgement.objects.create(task=task, rater=rater, ranking=[[ids[0]], [ids[1]]], client_submission_id="new")
    assert services.rater_stats_refresh_due() == [quiet.pk]
    assert RaterStats.objects.filter(project=quiet).get().judgements == 1


def test_the_raters_dashboard_lists_sorts_filters_and_links_to_each_raters_judgements(client, project, staff, rater):
    simulated_project(project, tasks=40)
    services.rater_stats_refresh(project=project)
    first = User.objects.get(username="first4")
    services.rater_pause(project=project, rater=first, reason="Checked by hand.")
    client.force_login(staff)
    url = reverse("admin:labeling_project_raters", args=[project.pk])

    page = client.get(url).content.decode()
    names = re.findall(r'<tr data-rater="(\w+)"', page)
    assert len(names) == 7 and names[0] in {"first4", "longer5", "random6"}  # most flags first
    assert "Position bias: chose the response shown first in 100% of 40 comparisons" in page
    assert "<strong>paused</strong>: Checked by hand." in page
    assert "<code>consensus_min</code>" in page
    # One week of work so far: each rater's chart has that week's judgements (drawn as a point), and the week is
    # named by its Monday.
    weekly = json.loads(re.search(r'<script id="weekly-\d+" type="application/json">(.*?)</script>', page).group(1))
    assert weekly["x"] == [1] and weekly["series"][0]["values"][0] > 0 and weekly["points"] is True
    monday = selectors.week_start(selectors.week_of(timezone.now()))
    assert f"week of {monday:%Y-%m-%d}" in page
    assert re.search(r"<th>All weeks</th><td></td>\s*<td>-?0\.\d\d<br>", page)  # the project's α
    judgements_link = re.search(r'href="(/admin/labeling/judgement/\?rater__id__exact=\d+[^"]*)"', page).group(1)
    listing = client.get(judgements_link.replace("&amp;", "&"))
    assert listing.status_code == 200 and "40 judgements" in listing.content.decode()

    ordered = re.findall(r'<tr data-rater="(\w+)"', client.get(url, {"o": "rater"}).content.decode())
    assert ordered == sorted(ordered)
    by_position = re.findall(r'<tr data-rater="(\w+)"', client.get(url, {"o": "-position"}).content.decode())
    assert by_position[0] == "first4"
    only_flagged = re.findall(r'<tr data-rater="(\w+)"', client.get(url, {"flagged": "1"}).content.decode())
    assert set(only_flagged) <= {"first4", "longer5", "random6"} and "first4" in only_flagged
    assert re.findall(r'<tr data-rater="(\w+)"', client.get(url, {"paused": "1"}).content.decode()) == ["first4"]
    assert re.findall(r'<tr data-rater="(\w+)"', client.get(url, {"q": "care"}).content.decode()) == [
        "careful0", "careful1", "careful2", "careful3"
    ]  # fmt: skip

    # A rater never reaches it.
    client.force_login(rater)
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_the_database_reads_every_place_of_every_ranking_and_the_refresh_stores_agreement(project, rater, other_rater):
    other = other_rater
    """The places come from each database's own JSON functions: they must match the rankings as stored."""
    task = task_create(project=project, k=4)
    a, b, c, d = task.response_ids()
    Judgement.objects.create(task=task, rater=rater, ranking=[[c], [a, d], [b]], client_submission_id="p1")
    Judgement.objects.create(task=task, rater=other, ranking=[[c], [a], [d], [b]], client_submission_id="p2")
    columns = selectors.judgement_columns(project=project)
    inputs = selectors.agreement_inputs(project=project, rater=columns.rater, task=columns.task, week=columns.week)
    units = sorted(map(tuple, inputs.units.tolist()))
    t = task.pk
    assert units == sorted([(t, c, 0, 2), (t, a, 1, 2), (t, d, 1, 1), (t, d, 2, 1), (t, b, 2, 1), (t, b, 3, 1)])
    wide = inputs.wide  # a task of four: every place of both judgements, with its week
    assert sorted(zip(wide.rater.tolist(), wide.response.tolist(), wide.place.tolist(), strict=True)) == sorted(
        [(rater.pk, c, 0), (rater.pk, a, 1), (rater.pk, d, 1), (rater.pk, b, 2)]
        + [(other.pk, c, 0), (other.pk, a, 1), (other.pk, d, 2), (other.pk, b, 3)]
    )
    assert set(wide.week.tolist()) == {selectors.week_of(timezone.now())}
    assert selectors.week_start(selectors.week_of(timezone.now())).weekday() == 0  # weeks start on Monday
    assert timezone.now().date() - selectors.week_start(selectors.week_of(timezone.now())) < timedelta(days=7)
    assert sorted(inputs.rater.tolist()) == sorted([rater.pk, other.pk])
    project_figures, _ = agreement.agreement(inputs)
    # Five pairs ordered alike, one tied by one rater: τ-b = 5 / sqrt(5 * 6).
    assert project_figures["kendall_tau_b"]["value"] == pytest.approx(5 / 30**0.5)

    simulated_project(project, tasks=60)
    services.rater_stats_refresh(project=project)
    figures = ProjectAgreement.objects.get(project=project).figures
    alpha = figures["alpha"]
    assert alpha["low"] <= alpha["value"] <= alpha["high"] and 0.0 < alpha["value"] < 0.8
    pairwise = figures["pairwise"]
    assert pairwise["low"] <= pairwise["value"] <= pairwise["high"] and pairwise["n"] == 60 * 21  # 7 raters a task
    assert figures["weeks"][-1]["pairwise"]["value"] == pytest.approx(pairwise["value"])
    careful = RaterStats.objects.get(rater__username="careful0")
    own = careful.details["agreement"]["pairwise"]
    assert own["value"] == pytest.approx(careful.pairwise_agreement) and own["low"] < own["value"] < own["high"]
    assert careful.alpha is not None and careful.details["agreement"]["alpha"]["n"] >= 60
    assert RaterStats.objects.get(rater=rater).kendall_tau_b == pytest.approx(5 / 30**0.5)


# --- trust weights in the data out --------------------------------------------------------------------------

WORDS = [f"w{i}" for i in range(20)] + ["good", "bad"]


def worth(text: str) -> int:
    """The known answer: a reply is better the more "good" and the fewer "bad" it holds."""
    return text.split().count("good") - text.split().count("bad")


def unequal_pair(rng: random.Random) -> tuple[str, str]:
    """Two replies of different worth, the better first."""
    while True:
        a, b = (" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(2))
        if worth(a) != worth(b):
            return (a, b) if worth(a) > worth(b) else (b, a)


@pytest.mark.trainer  # trains twice; the database's part is covered above on both engines: once, on PostgreSQL
def test_trust_weights_let_the_reward_model_learn_past_a_rater_who_flips_every_label(project, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from labeling import exporters
    from training.config import RewardConfig
    from training.models import tiny_reward_model, tiny_tokenizer
    from training.reward import score, train_reward_model

    rng = random.Random(11)
    careful, flipper = (UserFactory(username=name, rater=True) for name in ("careful", "flipper"))
    judgements = []

    def task_with(better: str, worse: str, gold: bool):
        prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"q{rng.randrange(60)}"}])
        good, poor = (ResponseFactory(prompt=prompt, text=text) for text in (better, worse))
        expected = [[good.pk], [poor.pk]]
        task = services.comparison_task_create(
            project=project, prompt=prompt, responses=[good, poor], gold_ranking=expected if gold else None
        )
        return task, expected

    def judge(task, rater, expected, *, right: bool, gold: bool):
        ranking = expected if right else expected[::-1]
        judgements.append(
            Judgement(
                task=task, rater=rater, ranking=ranking, shown_order=[expected[0][0], expected[1][0]],
                client_submission_id=f"t-{task.pk}", seconds_spent=30.0,
                gold_score=quality.gold_score(ranking, expected) if gold else None,
            )
        )  # fmt: skip

    for _ in range(10):  # gold tasks, judged by both
        task, expected = task_with(*unequal_pair(rng), gold=True)
        judge(task, careful, expected, right=True, gold=True)
        judge(task, flipper, expected, right=False, gold=True)
    for number in range(300):  # the careful rater judges 55% of the rest, the flipper 45%, reversed
        task, expected = task_with(*unequal_pair(rng), gold=False)
        judge(task, careful if number % 20 < 11 else flipper, expected, right=number % 20 < 11, gold=False)
    Judgement.objects.bulk_create(judgements)

    services.rater_stats_refresh(project=project)
    weights = dict(RaterStats.objects.values_list("rater__username", "weight"))
    assert weights["flipper"] == 0.0 and weights["careful"] > 1.0

    export = tmp_path / "ranking.jsonl"
    with open(export, "wb") as stream:
        exporters.write_export("ranking", "jsonl", selectors.ExportFilter(project_id=project.pk), stream)
    records = [json.loads(line) for line in export.read_text().splitlines()]
    assert {(record["rater"], record["weight"]) for record in records} == {
        ("careful", weights["careful"]), ("flipper", 0.0)
    }  # fmt: skip

    truth = [unequal_pair(rng) for _ in range(300)]
    accuracy = {}
    for use_weights in (True, False):
        tokenizer = tiny_tokenizer(WORDS + [f"q{i}" for i in range(60)])
        config = RewardConfig(
            epochs=3, learning_rate=3e-3, prompts_per_batch=16, eval_fraction=0.1, max_length=64,
            record_weights=use_weights, calibrate=False,
        )  # fmt: skip
        result = train_reward_model(
            config, export, tmp_path / f"out-{use_weights}", model=tiny_reward_model(tokenizer), tokenizer=tokenizer
        )
        model = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
        prompts = [[{"role": "user", "content": "q0"}]] * len(truth)
        better = score(model, tokenizer, prompts, [pair[0] for pair in truth], max_length=64)
        worse = score(model, tokenizer, prompts, [pair[1] for pair in truth], max_length=64)
        accuracy[use_weights] = float((better > worse).float().mean())
    assert accuracy[True] >= 0.85, accuracy
    assert accuracy[True] > accuracy[False] + 0.1, accuracy


def test_each_raters_agreement_with_the_current_reward_model_on_judgements_it_held_out(project, rater, other_rater):
    from labeling.models import DatasetSnapshot, ModelVersion, RewardCheck

    project.members.add(other_rater)
    snapshot = DatasetSnapshot.objects.create(project=project, kind="ranking", path="r.jsonl", sha256="0" * 64)
    old, current = (
        ModelVersion.objects.create(project=project, kind="reward", name=name, snapshot=snapshot, is_current=current)
        for name, current in (("rm-old", False), ("rm-new", True))
    )
    judgements = {}
    for who in (rater, other_rater):
        for number in range(3):
            task = task_create(project=project, k=3)
            ids = task.response_ids()
            judgements[who.pk, number] = Judgement.objects.create(
                task=task, rater=who, ranking=[[i] for i in ids], client_submission_id=f"rm-{number}"
            )
    # The current model agrees with all of rater's held-out pairs, with a third of the other's; the old one is
    # ignored.
    for number in range(3):
        RewardCheck.objects.create(model_version=current, judgement=judgements[rater.pk, number], agreed=3, pairs=3)
        RewardCheck.objects.create(
            model_version=current, judgement=judgements[other_rater.pk, number], agreed=1, pairs=3
        )
        RewardCheck.objects.create(model_version=old, judgement=judgements[rater.pk, number], agreed=0, pairs=3)
    services.rater_stats_refresh(project=project)
    stats = {row.rater_id: row for row in RaterStats.objects.filter(project=project)}
    assert stats[rater.pk].reward_agreement == 1.0 and stats[rater.pk].details["reward_pairs"] == 9
    assert stats[other_rater.pk].reward_agreement == pytest.approx(1 / 3)


def test_a_submit_that_pauses_the_rater_answers_without_a_next_task(gold_project, rater):
    """The submission with ``?next=true`` that trips the gold rule is stored, and brings no next task: the
    next-task call then says why."""
    for _ in range(4):
        gold_task(gold_project)
    client = APIClient()
    client.force_authenticate(rater)
    task = client.post(f"/api/v1/projects/{gold_project.slug}/tasks/next").json()
    answers = []
    for number in range(3):
        reversed_ids = [
            [response_id] for response_id in reversed(ComparisonTask.objects.get(pk=task["task_id"]).response_ids())
        ]
        answer = client.post(
            f"/api/v1/tasks/{task['task_id']}/judgements?next=true",
            {"client_submission_id": f"n{number}", "ranking": reversed_ids},
            format="json",
        )
        assert answer.status_code == 201, answer.content
        answers.append(answer.json())
        task = answers[-1].get("next")
    assert [("next" in answer) for answer in answers] == [True, True, False]
    assert RaterStanding.objects.get(rater=rater, project=gold_project).paused
    refused = client.post(f"/api/v1/projects/{gold_project.slug}/tasks/next")
    assert refused.status_code == 403 and refused.json()["message"].startswith("You are paused")


def test_a_new_raters_first_tasks_are_gold_when_each_submit_brings_the_next(project, rater):
    project.gold_first_tasks, project.gold_rate = 2, 0.0
    project.save()
    plain = [task_create(project=project, k=2) for _ in range(2)]
    gold = [gold_task(project) for _ in range(3)]
    client = APIClient()
    client.force_authenticate(rater)
    task = client.post(f"/api/v1/projects/{project.slug}/tasks/next").json()
    handed = []
    while task is not None:
        handed.append(task["task_id"])
        ranking = [[response["id"]] for response in task["responses"]]
        answer = client.post(
            f"/api/v1/tasks/{task['task_id']}/judgements?next=true",
            {"client_submission_id": f"f{len(handed)}", "ranking": ranking},
            format="json",
        )
        task = answer.json()["next"]
    assert handed[:4] == [gold[0].pk, gold[1].pk, plain[0].pk, plain[1].pk]
