"""The model in the loop: the current reward model scores open tasks' responses (once per response and version,
a batch per run), its agreement with new human judgements and the drift rule, and the task orders that route
raters to where the reward models are unsure or disagree."""

import math
import random
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling import runs, selectors, services
from labeling.errors import ApplicationError
from labeling.models import Assignment, ComparisonTask, Judgement, ModelVersion, ResponseScore, TrainingRun
from labeling.quality import wilson_interval
from labeling.runs import spec_for
from labeling.runs.kinds import score as score_kind
from tests.factories import ProjectFactory, PromptFactory, ResponseFactory, UserFactory, task_create
from tests.labeling.test_assignment import run_raters
from tests.labeling.test_policy_runs import reward_version

pytestmark = pytest.mark.django_db


def scored_task(project, version, scores, **options):
    """A task with one response per score, each scored by ``version``."""
    task = task_create(project=project, k=len(scores), **options)
    for response_id, value in zip(task.response_ids(), scores, strict=True):
        ResponseScore.objects.create(response_id=response_id, model_version=version, score=value)
    return task


def judged(task, rater, ranking_positions):
    """``rater``'s judgement of ``task``: groups of response positions, best first."""
    ids = task.response_ids()
    ranking = [[ids[position] for position in group] for group in ranking_positions]
    return services.judgement_create(task=task, ranking=ranking, rater=rater, client_submission_id=uuid.uuid4().hex)


def lease_order(project, rater) -> list[int]:
    """The tasks ``rater`` gets, one after another, judging each."""
    order = []
    while (lease := services.assignment_lease_next(project=project, rater=rater)) is not None:
        order.append(lease.task_id)
        services.judgement_submit(
            rater=rater, task_id=lease.task_id, client_submission_id=f"{rater.pk}-{lease.task_id}",
            ranking=[[response_id] for response_id in lease.shown_order],
        )  # fmt: skip
    return order


class TestRouting:
    def test_uncertainty_hands_out_the_smallest_gap_first_and_unscored_tasks_last(self, rater):
        project = ProjectFactory(members=[rater], task_order="uncertainty")
        current = ModelVersion.objects.create(project=project, kind="reward", name="rm", is_current=True)
        old = ModelVersion.objects.create(project=project, kind="reward", name="old")
        unscored = task_create(project=project, k=2)
        wide = scored_task(project, current, [3.0, 0.0])  # gap 3
        narrow = scored_task(project, current, [0.2, 1.0, 0.9])  # best two: 1.0 and 0.9, gap 0.1
        middle = scored_task(project, current, [1.0, 2.0])  # gap 1
        partly = scored_task(project, old, [0.0, 0.0])  # only another version scored it: unplaced
        ResponseScore.objects.create(response_id=partly.response_ids()[0], model_version=current, score=5.0)

        assert services.task_priorities_refresh(project=project) == 3
        priorities = dict(ComparisonTask.objects.values_list("pk", "priority"))
        assert priorities[narrow.pk] == pytest.approx(0.1) and priorities[middle.pk] == pytest.approx(1.0)
        assert priorities[wide.pk] == pytest.approx(3.0) and priorities[unscored.pk] is priorities[partly.pk] is None
        assert lease_order(project, rater) == [narrow.pk, middle.pk, wide.pk, unscored.pk, partly.pk]

    def test_a_rater_goes_on_after_their_last_task_wraps_round_and_starts_again_after_a_refresh(
        self, rater, other_rater
    ):
        project = ProjectFactory(members=[rater, other_rater], task_order="uncertainty")
        current = ModelVersion.objects.create(project=project, kind="reward", name="rm", is_current=True)
        first, second, third, fourth = (scored_task(project, current, [gap, 0.0]) for gap in (0.1, 0.2, 0.3, 0.4))
        services.task_priorities_refresh(project=project)
        held = services.assignment_lease_next(project=project, rater=other_rater)
        assert held.task_id == first.pk
        assert lease_order(project, rater) == [second.pk, third.pk, fourth.pk]
        # The other rater's lease runs out: the task before the rater's last one comes back round.
        gone = timezone.now() - timedelta(seconds=1)
        Assignment.objects.filter(pk=held.pk).update(leased_at=gone - timedelta(minutes=10), expires_at=gone)
        assert lease_order(project, rater) == [first.pk]

        # A refresh sends the rater back to the top: the new smallest gap first, not what follows their last.
        later = [scored_task(project, current, [gap, 0.0]) for gap in (0.9, 0.05)]
        services.task_priorities_refresh(project=project)
        assert lease_order(project, rater) == [later[1].pk, later[0].pk]

    def test_disagreement_hands_out_the_largest_spread_across_the_last_three_versions_first(self, rater):
        project = ProjectFactory(members=[rater], task_order="disagreement")
        oldest = ModelVersion.objects.create(project=project, kind="reward", name="v1")
        versions = [ModelVersion.objects.create(project=project, kind="reward", name=f"v{n}") for n in (2, 3, 4)]
        calm, torn, one_version = (task_create(project=project, k=2) for _ in range(3))
        for version, (calm_gap, torn_gap) in zip(versions, [(1.0, 2.0), (1.2, -2.0), (0.8, 0.0)], strict=True):
            for task, gap in ((calm, calm_gap), (torn, torn_gap)):
                first, second = task.response_ids()
                ResponseScore.objects.create(response_id=first, model_version=version, score=gap)
                ResponseScore.objects.create(response_id=second, model_version=version, score=0.0)
        for response_id in one_version.response_ids():  # the oldest version is not among the last three
            ResponseScore.objects.create(response_id=response_id, model_version=oldest, score=response_id)

        services.task_priorities_refresh(project=project)
        priorities = dict(ComparisonTask.objects.values_list("pk", "priority"))

        def sigmoid(value):
            return 1 / (1 + math.exp(-value))

        assert priorities[torn.pk] == pytest.approx(-(sigmoid(2.0) - sigmoid(-2.0)))
        assert priorities[calm.pk] == pytest.approx(-(sigmoid(1.2) - sigmoid(0.8)))
        assert priorities[one_version.pk] is None
        assert lease_order(project, rater) == [torn.pk, calm.pk, one_version.pk]

    def test_fifo_clears_the_priorities_and_hands_out_the_oldest_first(self, rater):
        project = ProjectFactory(members=[rater], task_order="uncertainty")
        current = ModelVersion.objects.create(project=project, kind="reward", name="rm", is_current=True)
        tasks = [scored_task(project, current, [gap, 0.0]) for gap in (3.0, 2.0, 1.0)]
        services.task_priorities_refresh(project=project)
        services.project_update(project=project, task_order="fifo")
        assert services.task_priorities_refresh(project=project) == 3
        assert set(ComparisonTask.objects.values_list("priority", flat=True)) == {None}
        assert lease_order(project, rater) == [task.pk for task in tasks]

    def test_a_new_task_order_or_a_new_current_reward_model_has_the_tasks_placed_again(
        self, django_capture_on_commit_callbacks, monkeypatch
    ):
        from config.celery import app

        sent = []
        monkeypatch.setattr(app, "send_task", lambda name, args, **options: sent.append((name, args)))
        project = ProjectFactory()
        version = ModelVersion.objects.create(project=project, kind="reward", name="rm")
        policy = ModelVersion.objects.create(project=project, kind="policy", name="p")
        with django_capture_on_commit_callbacks(execute=True):
            services.project_update(project=project, task_order="uncertainty")
            services.project_update(project=project, overlap=2)  # the order did not change: nothing sent
            runs.model_version_make_current(version=version)
            runs.model_version_make_current(version=policy)  # a policy: nothing to score
        assert sent == [("labeling.tasks.model_in_loop_refresh_task", [project.pk])] * 2


def test_staff_set_the_task_order_through_the_api_and_a_wrong_one_is_named(staff_api, rater_api):
    project = ProjectFactory()
    url = f"/api/v1/projects/{project.slug}"
    assert rater_api.patch(url, {"task_order": "uncertainty"}, format="json").status_code == 403
    answer = staff_api.patch(url, {"task_order": "uncertainty", "drift_window": 20}, format="json")
    assert answer.status_code == 200 and answer.json()["task_order"] == "uncertainty"
    wrong = staff_api.patch(url, {"task_order": "random"}, format="json")
    assert wrong.status_code == 400 and "task_order" in str(wrong.json()), wrong.json()
    project.refresh_from_db()
    assert (project.task_order, project.drift_window) == ("uncertainty", 20)


def test_the_scheduled_job_waits_before_it_tries_again_a_version_whose_score_run_failed(settings):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = ProjectFactory()
    task_create(project=project, k=2)
    version = ModelVersion.objects.create(project=project, kind="reward", name="rm", is_current=True)
    failed = TrainingRun.objects.create(
        project=project, kind="score", status="failed", parent_model=version, finished_at=timezone.now()
    )
    assert list(selectors.projects_in_the_loop()) == [project]
    assert runs.open_responses_scoring_next(project=project) is None
    TrainingRun.objects.filter(pk=failed.pk).update(finished_at=timezone.now() - score_kind.RETRY_AFTER)
    run = runs.open_responses_scoring_next(project=project)
    assert run.kind == "score" and run.config == {"scope": "open", "limit": score_kind.OPEN_BATCH}


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_raters_under_uncertainty_keep_overlap_gold_and_lease_guarantees():
    random.seed(11)
    raters = [UserFactory(rater=True) for _ in range(16)]
    project = ProjectFactory(members=raters, overlap=2, task_order="uncertainty", gold_rate=0.1, gold_first_tasks=2)
    current = ModelVersion.objects.create(project=project, kind="reward", name="rm", is_current=True)
    tasks = [
        scored_task(project, current, [random.random() for _ in range(random.randint(2, 4))]) for _ in range(150)
    ] + [task_create(project=project, k=2) for _ in range(30)]  # unscored: after the others
    gold = []
    for _ in range(4):
        prompt = PromptFactory(project=project)
        responses = ResponseFactory.create_batch(2, prompt=prompt)
        ranking = [[responses[0].pk], [responses[1].pk]]
        gold.append(
            services.comparison_task_create(project=project, prompt=prompt, responses=responses, gold_ranking=ranking)
        )
    services.task_priorities_refresh(project=project)

    judgements_made: Counter = Counter()
    errors: list = []
    run_raters(project, raters, judgements_made, errors)

    assert errors == []
    per_task = Counter(Judgement.objects.values_list("task_id", flat=True))
    assert {per_task[task.pk] for task in tasks} == {2}  # every ordinary task exactly to its overlap
    assert {per_task[task.pk] for task in gold} == {16}  # every rater judges every gold task once
    pairs = list(Judgement.objects.values_list("task_id", "rater_id"))
    assert len(set(pairs)) == len(pairs) == sum(judgements_made.values()) == 150 * 2 + 30 * 2 + 4 * 16
    assert Assignment.objects.filter(state="leased").count() == 0


class TestLiveAgreement:
    @pytest.fixture
    def setting(self):
        """A project whose current reward model scored four tasks, judged by two raters after it was trained."""
        project = ProjectFactory(drift_window=3, drift_margin=0.1)
        first, second = UserFactory(rater=True, username="ann"), UserFactory(rater=True, username="bob")
        earlier = scored_task(project, ModelVersion.objects.create(project=project, kind="reward", name="old"), [1, 0])
        judged(earlier, first, [[1], [0]])  # before the model: not checked
        version = ModelVersion.objects.create(
            project=project, kind="reward", name="rm", is_current=True, metrics={"eval_accuracy": 0.8}
        )
        tasks = {
            "agree": scored_task(project, version, [2.0, 1.0]),
            "against": scored_task(project, version, [3.0, 2.0, 1.0]),
            "even": scored_task(project, version, [1.0, 1.0]),
            "unscored": task_create(project=project, k=2),
            "tie": scored_task(project, version, [1.0, 0.0]),
        }
        for name, category in (("agree", "maths"), ("against", "maths"), ("even", "poems")):
            tasks[name].prompt.metadata = {"category": category}
            tasks[name].prompt.save()
        judged(tasks["agree"], first, [[0], [1]])  # 1 of 1
        judged(tasks["against"], second, [[2], [0, 1]])  # 0 of 2: the model puts 2 last
        judged(tasks["even"], first, [[0], [1]])  # equal scores: half of 1
        judged(tasks["unscored"], second, [[0], [1]])  # not checkable yet
        judged(tasks["tie"], second, [[0, 1]])  # decides no pair
        return project, version

    def test_the_figures_equal_a_hand_computation(self, setting):
        project, version = setting
        agreement = selectors.reward_model_agreement(project=project, slice_key="category")
        overall = agreement.by("all")[0]
        assert (overall.agreed, overall.pairs, overall.judgements) == (1.5, 4, 3)
        assert overall.interval == pytest.approx(wilson_interval(1.5 / 4, 4))
        assert [(f.label, f.agreed, f.pairs) for f in agreement.by("rater")] == [("ann", 1.5, 2), ("bob", 0.0, 2)]
        assert [(f.label, f.rate) for f in agreement.by("slice")] == [("maths", 1 / 3), ("poems", 0.5)]
        assert len(agreement.by("week")) == 1 and agreement.unchecked == 1
        assert agreement.slice_keys == ["origin", "category"]
        assert agreement.drift.held_out == 0.8 and agreement.drift.recent.rate == pytest.approx(1.5 / 4)
        assert agreement.drift.warning  # three judgements in the window, 0.375 < 0.8 - 0.1

    def test_the_drift_warning_appears_when_new_judgements_contradict_the_model_and_not_before(self, rater):
        project = ProjectFactory(drift_window=4, drift_margin=0.1)
        version = ModelVersion.objects.create(
            project=project, kind="reward", name="rm", is_current=True, metrics={"eval_accuracy": 0.75}
        )
        warnings = []
        for agrees in (True, True, True, True, False, False, False):
            judged(scored_task(project, version, [1.0, 0.0]), rater, [[0], [1]] if agrees else [[1], [0]])
            warnings.append(selectors.reward_model_agreement(project=project).drift.warning)
        # Newest four: 4/4, 3/4 (0.75: not below 0.65), 2/4 = 0.5 < 0.65, 1/4.
        assert warnings == [False, False, False, False, False, True, True]

    def test_retrain_on_drift_starts_one_reward_run_per_current_model(self, rater, settings, artefacts):
        settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
        project = ProjectFactory(drift_window=2, drift_margin=0.1)
        version = ModelVersion.objects.create(
            project=project, kind="reward", name="rm", is_current=True, metrics={"eval_accuracy": 0.9}
        )
        for _ in range(2):
            judged(scored_task(project, version, [1.0, 0.0]), rater, [[1], [0]])
        assert runs.reward_retrain_check(project=project) is None  # the project does not retrain on drift
        services.project_update(project=project, retrain_on_drift=True)
        run = runs.reward_retrain_check(project=project)
        assert run is not None and run.kind == "reward"
        TrainingRun.objects.filter(pk=run.pk).update(status="failed")
        assert runs.reward_retrain_check(project=project) is None  # once per current reward model

    def test_the_api_and_the_admin_page_show_the_figures_to_staff_only(
        self, setting, staff_api, rater_api, admin_client
    ):
        project, _ = setting
        url = f"/api/v1/projects/{project.slug}/reward-agreement"
        assert rater_api.get(url).status_code == 403
        body = staff_api.get(url, {"slice": "category"}).json()
        assert body["overall"]["agreement"] == 0.375 and body["overall"]["pairs"] == 4
        assert [row["name"] for row in body["by_slice"]] == ["maths", "poems"]
        assert body["drift"]["warning"] is True and body["held_out_accuracy"] == 0.8
        page = admin_client.get(f"/admin/labeling/project/{project.pk}/reward-model/?slice=category").content.decode()
        assert 'id="drift-warning"' in page and "0.375" in page and "maths" in page

    def test_the_page_s_button_starts_scoring_what_the_model_has_not_scored(self, setting, admin_client, settings):
        settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
        project, version = setting
        scored_task(project, version, [1.0, 2.0])
        task_create(project=project, k=3)  # the judged tasks are complete: these two are the open ones
        url = f"/admin/labeling/project/{project.pk}/reward-model/"
        page = admin_client.get(url).content.decode()
        assert "It has scored <strong>2</strong> of the 5 responses" in page
        assert admin_client.post(url).status_code == 302
        run = TrainingRun.objects.get(kind="score")
        assert (run.parent_model, run.config["scope"]) == (version, "open")


@pytest.mark.trainer
@pytest.mark.django_db(transaction=True)
def test_the_scoring_job_scores_open_responses_a_batch_at_a_time_once_and_places_the_tasks(
    settings, artefacts, monkeypatch
):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    monkeypatch.setattr(score_kind, "OPEN_BATCH", 4)
    project = ProjectFactory(task_order="uncertainty")
    tasks = [task_create(project=project, k=2) for _ in range(3)]
    done = task_create(project=project, k=2)
    ComparisonTask.objects.filter(pk=done.pk).update(status="complete")
    reward = reward_version(project, artefacts)

    first = runs.open_responses_scoring_next(project=project)
    assert first.config == {"scope": "open", "limit": 4}
    assert runs.open_responses_scoring_next(project=project) is None  # one score run at a time
    assert runs.training_run_execute(first.pk) == "succeeded"
    assert ResponseScore.objects.filter(model_version=reward).count() == 4
    second = TrainingRun.objects.filter(kind="score", status="queued").get()  # the rest, started by the first
    assert runs.training_run_execute(second.pk) == "succeeded"
    scores = dict(ResponseScore.objects.filter(model_version=reward).values_list("response_id", "score"))
    assert set(scores) == {response_id for task in tasks for response_id in task.response_ids()}
    assert not TrainingRun.objects.filter(kind="score", status="queued").exists()
    for task in tasks:
        task.refresh_from_db()
        first_score, second_score = (scores[response_id] for response_id in task.response_ids())
        assert task.priority == pytest.approx(abs(first_score - second_score))

    with pytest.raises(ApplicationError, match="scored every open response already"):
        runs.scoring_run_start(project=project, scope="open")
    first.refresh_from_db()
    assert spec_for("score").register(first, artefacts / first.output_dir, timezone.now()) == 0
    assert ResponseScore.objects.filter(model_version=reward).count() == 6
