"""Evaluation: eval prompts never reach a training export unless it asks; the leaderboard fills from judgements
between origins; evaluation runs make balanced, blinded pairwise tasks; the over-optimisation figures."""

import json
import uuid
from collections import Counter

import pytest
from django.core.management import call_command
from django.utils import timezone

from labeling import leaderboard, runs, selectors, services
from labeling.errors import ApplicationError
from labeling.models import ComparisonTask, ModelVersion, Prompt, Response, ResponseScore, TrainingRun
from labeling.runs import spec_for
from tests.factories import ProjectFactory, PromptFactory, ResponseFactory, UserFactory, task_create
from tests.labeling.test_data_io import export, import_bytes, jsonl
from tests.labeling.test_policy_runs import WORDS, reward_version
from tests.worker import celery_worker, wait_for_end
from training.models import prepare_policy_tokenizer, tiny_causal_lm, tiny_tokenizer

pytestmark = pytest.mark.django_db


def judged_task(project, *, is_eval: bool, rater=None, origins=("human", "human")):
    """A task on a new prompt (an eval prompt or not) with one answer per origin, judged first-best, and a
    demonstration on the prompt."""
    prompt = PromptFactory(project=project, is_eval=is_eval)
    responses = [ResponseFactory(prompt=prompt, origin=origin) for origin in origins]
    task = services.comparison_task_create(project=project, prompt=prompt, responses=responses)
    services.judgement_create(
        task=task, ranking=[[response.pk] for response in responses], rater=rater, origin="" if rater else "tests",
        client_submission_id=f"judged-{task.pk}",
    )  # fmt: skip
    services.demonstration_create(prompt=prompt, text=f"Ideal reply {prompt.pk}.", origin="tests")
    return prompt


class TestEvalPrompts:
    def test_eval_prompts_never_reach_the_reward_sft_and_prompts_exports_by_default(self):
        project = ProjectFactory()
        training = judged_task(project, is_eval=False)
        held_out = judged_task(project, is_eval=True)
        training_text, held_out_text = training.messages[-1]["content"], held_out.messages[-1]["content"]
        for kind in ("preference", "ranking", "consensus", "hh", "sft", "prompts"):
            records = json.dumps(export(project, kind))
            assert training_text in records, kind
            assert held_out_text not in records, kind
            # Asked for, they come: with the rest, or alone.
            assert held_out_text in json.dumps(export(project, kind, eval="include")), kind
            alone = json.dumps(export(project, kind, eval="only"))
            assert held_out_text in alone and training_text not in alone, kind

    def test_a_run_s_snapshot_leaves_eval_prompts_out(self):
        project = ProjectFactory()
        judged_task(project, is_eval=False)
        judged_task(project, is_eval=True)
        snapshot = services.dataset_snapshot_create(project=project, kind="prompts")
        assert snapshot.row_count == 1 and snapshot.filters["eval"] == "exclude"

    def test_the_export_command_and_api_take_the_eval_choice(self, client, capsys):
        project = ProjectFactory()
        judged_task(project, is_eval=False)
        held_out = judged_task(project, is_eval=True)
        call_command("export_data", "--project", project.slug, "--kind", "prompts", "--eval", "only")
        assert [json.loads(line)["prompt_id"] for line in capsys.readouterr().out.splitlines()] == [held_out.pk]
        staff = UserFactory(is_staff=True)
        client.force_login(staff)
        answer = client.get(f"/api/v1/projects/{project.slug}/exports/prompts", {"eval": "only"})
        lines = b"".join(answer.streaming_content).decode().splitlines()
        assert [json.loads(line)["prompt_id"] for line in lines] == [held_out.pk]
        assert client.get(f"/api/v1/projects/{project.slug}/exports/prompts", {"eval": "some"}).status_code == 400

    def test_a_seeded_split_marks_the_fraction_and_the_same_prompts_for_the_same_seed(self):
        first, second = ProjectFactory(), ProjectFactory()
        for project in (first, second):
            PromptFactory.create_batch(40, project=project)
        one = services.eval_prompts_split(project=first, fraction=0.25, seed=7)
        services.eval_prompts_split(project=second, fraction=0.25, seed=7)
        assert (one.marked, one.eval_prompts, one.prompts) == (10, 10, 40)

        def positions(project):
            ids = list(Prompt.objects.filter(project=project).order_by("id").values_list("id", "is_eval"))
            return [index for index, (_, is_eval) in enumerate(ids) if is_eval]

        assert positions(first) == positions(second)
        # A split only adds, up to the fraction; another seed draws other prompts.
        again = services.eval_prompts_split(project=first, fraction=0.25, seed=7)
        assert again.marked == 0
        more = services.eval_prompts_split(project=first, fraction=0.5, seed=8)
        assert (more.marked, more.eval_prompts) == (10, 20)
        with pytest.raises(ApplicationError, match="between 0 and 1"):
            services.eval_prompts_split(project=first, fraction=1.5)

    def test_the_split_counts_prompts_that_were_already_judged(self):
        project = ProjectFactory()
        judged_task(project, is_eval=False)
        PromptFactory(project=project)
        split = services.eval_prompts_split(project=project, fraction=0.99, seed=1)
        assert (split.marked, split.already_used) == (2, 1)

    def test_an_import_marks_records_whose_split_is_eval(self):
        project = ProjectFactory()
        records = [
            {"prompt": "Kept for training?", "split": "train"},
            {"prompt": "Held out?", "split": "eval"},
            {"prompt": "No split given?"},
        ]
        import_bytes(project, jsonl(records), "prompts.jsonl")
        marked = dict(Prompt.objects.filter(project=project).values_list("messages__0__content", "is_eval"))
        assert marked == {"Kept for training?": False, "Held out?": True, "No split given?": False}

    def test_an_unknown_split_is_named_with_its_line(self):
        project = ProjectFactory()
        records = [{"prompt": "Fine?"}, {"prompt": "Bad?", "split": "test"}]
        with pytest.raises(ApplicationError, match="Line 2, field 'split'"):
            import_bytes(project, jsonl(records), "prompts.jsonl")
        assert not Prompt.objects.filter(project=project).exists()


class TestLeaderboard:
    def test_the_leaderboard_counts_judgements_between_origins_with_ties_as_halves(self):
        project = ProjectFactory()
        rater = UserFactory(rater=True)
        # "big" beats "small" in 3 of 4 judgements; one more task has both answers from "small": not counted.
        for index in range(4):
            origins = ("big", "small") if index < 3 else ("small", "big")
            judged_task(project, is_eval=True, rater=rater, origins=origins)
        judged_task(project, is_eval=True, rater=rater, origins=("small", "small"))
        judged_task(project, is_eval=False, rater=rater, origins=("small", "big"))
        comparisons = selectors.version_comparisons(project=project, eval_only=True).comparisons
        assert len(comparisons) == 4
        board = selectors.project_leaderboard(project=project, eval_only=True, reference="small")
        rows = {row.name: row for row in board.standings}
        assert rows["big"].win_rate == pytest.approx(0.75) and rows["big"].reference_comparisons == 4
        assert rows["big"].strength > 0 and rows["small"].strength == 0
        everything = selectors.project_leaderboard(project=project, reference="small")
        assert {row.name: row for row in everything.standings}["big"].win_rate == pytest.approx(0.6)

    def test_the_api_serves_the_leaderboard_as_json_and_csv_to_staff_only(self, client):
        project = ProjectFactory()
        rater = UserFactory(rater=True)
        for index in range(6):
            judged_task(project, is_eval=True, rater=rater, origins=("big", "small") if index < 4 else ("small", "big"))
        url = f"/api/v1/projects/{project.slug}/leaderboard"
        client.force_login(rater)
        assert client.get(url).status_code == 403
        client.force_login(UserFactory(is_staff=True))
        body = client.get(url, {"reference": "small"}).json()
        assert body["prompts"] == "eval" and body["reference"] == "small" and body["resamples"] >= 200
        big = next(row for row in body["standings"] if row["name"] == "big")
        assert big["win_rate"] == pytest.approx(4 / 6) and big["comparisons"] == 6 and big["rank"] == 1
        assert big["interval"][0] <= big["strength"] <= big["interval"][1]
        csv_text = client.get(url, {"reference": "small", "format": "csv"}).content.decode()
        header, first, second = csv_text.splitlines()
        assert header.startswith("rank,version,comparisons,strength") and first.split(",")[1] == "big"
        assert client.get(url, {"judge": "nobody"}).status_code == 400
        assert client.get(url, {"judge": "ai"}).json()["comparisons"] == 0

    def test_the_admin_page_shows_the_board_and_splits_eval_prompts(self, admin_client):
        project = ProjectFactory()
        rater = UserFactory(rater=True)
        for index in range(5):
            judged_task(
                project, is_eval=False, rater=rater, origins=("big", "small") if index < 4 else ("small", "big")
            )
        PromptFactory.create_batch(5, project=project)
        url = f"/admin/labeling/project/{project.pk}/evaluation/"
        page = admin_client.get(url).content.decode()
        assert 'data-version="big"' in page and "leaderboard-chart" in page and "on all prompts" in page
        answer = admin_client.post(url, {"fraction": "0.5", "seed": "3"})
        assert answer.status_code == 302
        assert Prompt.objects.filter(project=project, is_eval=True).count() == 5
        download = admin_client.get(url, {"prompts": "all", "format": "csv"})
        assert download["Content-Type"] == "text/csv" and "big" in download.content.decode()


def eval_project(prompts: int = 6, **fields):
    """A project with ``prompts`` eval prompts (each with one imported answer) and two training prompts."""
    project = ProjectFactory(overlap=1, **fields)
    for index in range(prompts):
        prompt = PromptFactory(
            project=project, messages=[{"role": "user", "content": f"question {index}"}], is_eval=True
        )
        ResponseFactory(prompt=prompt, text=f"fine answer {index}", origin="imported")
    for index in range(2):
        PromptFactory(project=project, messages=[{"role": "user", "content": f"training {index}"}])
    return project


def policy_version(project, artefacts_dir, name: str, seed: int) -> ModelVersion:
    folder = artefacts_dir / "models" / name
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    tiny_causal_lm(tokenizer, seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ModelVersion.objects.create(project=project, kind="policy", name=name, artefact_path=f"models/{name}")


def finished_evaluation(project, artefacts_dir, versions: list[ModelVersion], baseline: str = "") -> TrainingRun:
    """An evaluation run whose trainer has just written every version's answer to each eval prompt."""
    run = runs.evaluation_run_start(project=project, policies=versions, baseline=baseline)
    run.status = "running"
    run.save()
    out_dir = artefacts_dir / "runs" / f"evaluate-{run.pk}"
    out_dir.mkdir(parents=True)
    with open(out_dir / "responses.jsonl", "w") as lines:
        for prompt in Prompt.objects.filter(project=project, is_eval=True):
            for version in versions:
                text = f"{version.name} says {prompt.pk} " + "word " * len(version.name)
                lines.write(json.dumps({"prompt_id": prompt.pk, "version": version.name, "response": text}) + "\n")
    (out_dir / "result.json").write_text(json.dumps({"metrics": {"versions": len(versions)}}))
    spec_for("evaluate").register(run, out_dir, timezone.now())
    run.refresh_from_db()
    return run


class TestEvaluationRuns:
    def test_every_pair_of_versions_meets_on_every_eval_prompt_each_first_half_the_time(self, settings, artefacts):
        settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
        project = eval_project(prompts=6)
        versions = [ModelVersion.objects.create(project=project, kind="policy", name=name) for name in ("a", "bb")]
        run = finished_evaluation(project, artefacts, versions, baseline="imported")
        assert run.status == "succeeded" and run.snapshot.filters["eval"] == "only"
        tasks = ComparisonTask.objects.filter(project=project)
        assert tasks.count() == 6 * 3 == run.metrics["tasks_created"]
        pairs = Counter()
        first = Counter()
        for task in tasks.prefetch_related("slots__response"):
            origins = [slot.response.origin for slot in task.slots.order_by("position")]
            assert task.keep_order and task.prompt.is_eval and len(origins) == 2
            pairs[frozenset(origins)] += 1
            first[origins[0]] += 1
        assert set(pairs.values()) == {6}  # each pair of versions on each of the six prompts
        assert first == {"a": 6, "bb": 6, "imported": 6}  # each first in half of its twelve tasks
        assert run.metrics["shown_first"] == dict(first)
        assert Response.objects.filter(model_version=versions[0]).count() == 6

    def test_raters_see_no_origin_and_get_the_stored_order_and_the_leaderboard_fills(
        self, settings, artefacts, rater_api, rater, staff_api
    ):
        settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
        project = eval_project(prompts=4)
        project.members.add(rater)
        versions = [ModelVersion.objects.create(project=project, kind="policy", name=name) for name in ("a", "bb")]
        finished_evaluation(project, artefacts, versions)
        for _ in range(4):
            payload = rater_api.post(f"/api/v1/projects/{project.slug}/tasks/next", format="json").json()
            text = json.dumps(payload)
            assert '"a"' not in text and "bb" not in text.replace("bb says", "") and "origin" not in text
            task = ComparisonTask.objects.get(pk=payload["task_id"])
            shown = [response["id"] for response in payload["responses"]]
            assert shown == task.response_ids()  # the stored, balanced order
            winner = next(r["id"] for r in payload["responses"] if r["html"].startswith("<p>bb says"))
            loser = next(r["id"] for r in payload["responses"] if r["id"] != winner)
            body = {"ranking": [[winner], [loser]], "client_submission_id": uuid.uuid4().hex}
            assert rater_api.post(f"/api/v1/tasks/{task.pk}/judgements", body, format="json").status_code == 201
        board = staff_api.get(f"/api/v1/projects/{project.slug}/leaderboard", {"reference": "a"}).json()
        bb = next(row for row in board["standings"] if row["name"] == "bb")
        assert (bb["rank"], bb["win_rate"], bb["reference_comparisons"]) == (1, 1.0, 4)

    def test_an_evaluation_refuses_what_it_cannot_compare(self, settings, artefacts):
        settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
        project = eval_project(prompts=2)
        one = ModelVersion.objects.create(project=project, kind="policy", name="one")
        with pytest.raises(ApplicationError, match="two or more versions"):
            runs.evaluation_run_start(project=project, policies=[one])
        with pytest.raises(ApplicationError, match="No eval prompt has an answer from 'nobody'"):
            runs.evaluation_run_start(project=project, policies=[one], baseline="nobody")
        with pytest.raises(ApplicationError, match="once"):
            runs.evaluation_run_start(project=project, policies=[one], base_models=["one"])
        elsewhere = ModelVersion.objects.create(project=ProjectFactory(), kind="policy", name="far")
        with pytest.raises(ApplicationError, match="policies of this project"):
            runs.evaluation_run_start(project=project, policies=[one, elsewhere])
        bare = ProjectFactory()
        PromptFactory(project=bare)
        with pytest.raises(ApplicationError, match="no eval prompts"):
            runs.evaluation_run_start(project=bare, base_models=["x", "y"])
        assert not TrainingRun.objects.exists()

    def test_the_model_list_action_opens_the_evaluation_form_with_the_policies_chosen(self, admin_client, artefacts):
        project = eval_project(prompts=2)
        versions = [ModelVersion.objects.create(project=project, kind="policy", name=name) for name in ("a", "b")]
        answer = admin_client.post(
            "/admin/labeling/modelversion/",
            {"action": "evaluate", "_selected_action": [version.pk for version in versions]},
        )
        assert answer.status_code == 302
        page = admin_client.get(answer["Location"]).content.decode()
        for version in versions:
            assert f'value="{version.pk}" checked' in page or f'value="{version.pk}" selected' in page


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_an_evaluation_run_has_two_tiny_policies_answer_the_eval_prompts_on_a_worker(settings, artefacts, tmp_path):
    project = eval_project(prompts=3)
    versions = [policy_version(project, artefacts, name, seed) for name, seed in (("tiny-a", 1), ("tiny-b", 2))]
    with celery_worker(tmp_path) as worker:
        settings.CELERY_TRAINING_QUEUE = worker.queue
        run = wait_for_end(
            runs.evaluation_run_start(project=project, policies=versions, baseline="imported", max_new_tokens=4), worker
        )
    assert run.status == "succeeded", f"{run.error}\n{run.log_tail}"
    assert run.metrics["versions"] == 2 and run.metrics["prompts"] == 3
    stored = Response.objects.filter(model_version__in=versions)
    assert stored.count() == 6 - run.metrics["empty_responses"]
    assert set(stored.values_list("prompt__is_eval", flat=True)) == {True}
    tasks = ComparisonTask.objects.filter(project=project, keep_order=True)
    assert tasks.count() == run.metrics["tasks_created"] > 0


@pytest.mark.django_db
def test_the_api_starts_an_evaluation_run_for_staff(settings, artefacts, staff_api, rater_api):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = eval_project(prompts=2)
    version = ModelVersion.objects.create(project=project, kind="policy", name="p1")
    url = f"/api/v1/projects/{project.slug}/evaluations"
    body = {"policies": [version.pk], "base_models": ["smollm2-135m-instruct"], "max_prompts": 2}
    assert rater_api.post(url, body, format="json").status_code == 403
    answer = staff_api.post(url, body, format="json")
    assert answer.status_code == 202, answer.content
    run = TrainingRun.objects.get(pk=answer.json()["run_id"])
    assert (run.kind, run.base_model, run.config["max_prompts"]) == ("evaluate", "p1, smollm2-135m-instruct", 2)
    assert staff_api.post(url, {"policies": [version.pk, 999]}, format="json").status_code == 400
    again = staff_api.post(url, body, format="json")
    assert again.status_code == 409  # one evaluation at a time per project


class TestRewardModelJudge:
    def test_the_reward_model_judges_the_pairs_raters_compared_with_its_stored_scores(self):
        project = ProjectFactory()
        rater = UserFactory(rater=True)
        prompts = [
            judged_task(project, is_eval=True, rater=rater, origins=origins)
            for origins in [("big", "small")] * 3 + [("small", "big")]
        ]  # raters: big wins three of four
        reward = ModelVersion.objects.create(project=project, kind="reward", name="rm", is_current=True)
        for prompt in prompts:  # the reward model prefers "small" everywhere
            for response in prompt.responses.all():
                ResponseScore.objects.create(response=response, model_version=reward, score=len(response.origin))
        board = selectors.project_leaderboard(project=project, judge="reward", eval_only=True, reference="small")
        rows = {row.name: row for row in board.standings}
        assert rows["big"].win_rate == 0.0 and rows["big"].strength < 0
        assert any("orders 1 of 4 comparisons as the raters did (25%)" in note for note in board.notes)
        human = selectors.project_leaderboard(project=project, judge="human", eval_only=True, reference="small")
        assert leaderboard.ranking_agreement(human, board) == pytest.approx(-1.0)

    def test_pairs_without_a_score_are_counted_and_left_out(self):
        project = ProjectFactory()
        rater = UserFactory(rater=True)
        judged_task(project, is_eval=True, rater=rater, origins=("big", "small"))
        ModelVersion.objects.create(project=project, kind="reward", name="rm", is_current=True)
        board = selectors.project_leaderboard(project=project, judge="reward", eval_only=True)
        assert board.comparisons == 0 and any("1 compared pairs have no score" in note for note in board.notes)


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_score_run_stores_each_score_once_and_a_second_run_has_nothing_to_do(settings, artefacts, tmp_path):
    project = ProjectFactory()
    rater = UserFactory(rater=True)
    for origins in [("tiny-a", "tiny-b"), ("tiny-b", "tiny-a")]:
        judged_task(project, is_eval=True, rater=rater, origins=origins)
    task_create(project=project, k=2)  # one origin only: not compared, not scored
    reward = reward_version(project, artefacts)
    with celery_worker(tmp_path) as worker:
        settings.CELERY_TRAINING_QUEUE = worker.queue
        run = wait_for_end(runs.scoring_run_start(project=project), worker)
    assert run.status == "succeeded", f"{run.error}\n{run.log_tail}"
    assert run.metrics["scores_stored"] == 4 == ResponseScore.objects.filter(model_version=reward).count()
    with pytest.raises(ApplicationError, match="scored every compared response already"):
        runs.scoring_run_start(project=project)
    # Registering the same output again writes nothing new.
    out_dir = artefacts / run.output_dir
    assert spec_for("score").register(run, out_dir, timezone.now()) == 0
    board = selectors.project_leaderboard(project=project, judge="reward", eval_only=True)
    assert board.comparisons == 2


def finished_ppo_run(
    project, artefacts_dir, prompts: int, scores=(0.1, 0.5, 0.9), kls=(0.0, 2.0, 5.0), name: str = "ppo-probes"
) -> TrainingRun:
    """A finished PPO run whose probes file holds ``prompts`` probe prompts answered at steps 0, 10 and 20,
    the scores and KLs at each step spread around the given means (+-0.05 and +-0.5)."""
    run = TrainingRun.objects.create(project=project, kind="ppo", status="succeeded", output_dir=f"runs/{name}")
    folder = artefacts_dir / "runs" / name
    folder.mkdir(parents=True)
    with open(folder / "probes.jsonl", "w") as lines:
        for step, score, kl in zip((0, 10, 20), scores, kls, strict=True):
            for index in range(prompts):
                prompt = Prompt.objects.get_or_create(
                    project=project, external_id=f"probe-{index}",
                    defaults={"messages": [{"role": "user", "content": f"probe {index}?"}]},
                )[0]  # fmt: skip
                spread = 1 if index % 2 else -1
                record = {
                    "step": step, "prompt_id": prompt.pk, "response": f"answer {index} at {step}",
                    "score": score + 0.05 * spread, "kl": kl + (0.5 * spread if kl else 0.0), "finished": True,
                }  # fmt: skip
                lines.write(json.dumps(record) + "\n")
    return run


def judge_probe_tasks(project, rater, verdicts: dict[int, list[str]]):
    """Judge each probe task: for step S, the i-th task of that step gets verdicts[S][i]: "later", "start" or
    "tie"."""
    seen: Counter = Counter()
    for task in ComparisonTask.objects.filter(project=project).order_by("id"):
        responses = {response.metadata["step"]: response for response in task.responses.all()}
        step = max(responses)
        verdict = verdicts[step][seen[step]]
        seen[step] += 1
        later, start = responses[step].pk, responses[0].pk
        ranking = {"later": [[later], [start]], "start": [[start], [later]], "tie": [[later, start]]}[verdict]
        services.judgement_create(task=task, ranking=ranking, rater=rater, client_submission_id=f"probe-{task.pk}")


class TestOveroptimisationCheck:
    def test_the_page_s_figures_equal_a_hand_computation(self, admin_client, artefacts):
        project = ProjectFactory(overlap=1)
        rater = UserFactory(rater=True)
        run = finished_ppo_run(project, artefacts, prompts=4)
        url = f"/admin/labeling/trainingrun/{run.pk}/overoptimisation/"
        action = {"action": "check_overoptimisation", "_selected_action": [run.pk]}
        assert admin_client.post("/admin/labeling/trainingrun/", action)["Location"] == url
        assert admin_client.post(url, {"prompts": "0"}).status_code == 302
        tasks = ComparisonTask.objects.filter(project=project)
        assert tasks.count() == 8 and all(task.keep_order for task in tasks)
        first = Counter(task.response_ids()[0] == min(task.response_ids()) for task in tasks)
        assert first == {True: 4, False: 4}  # the start's answer (stored first) is shown first in half
        judge_probe_tasks(
            project, rater, {10: ["later", "later", "later", "start"], 20: ["later", "tie", "start", "start"]}
        )
        report = selectors.overoptimisation_report(run=run)
        by_step = {point.step: point for point in report.points}
        # By hand: means of four answers each; wins with ties as halves.
        assert by_step[0].kl == 0.0 and by_step[10].kl == pytest.approx(2.0) and by_step[20].kl == pytest.approx(5.0)
        assert by_step[10].score == pytest.approx(0.5) and by_step[20].score == pytest.approx(0.9)
        assert by_step[10].win_rate == pytest.approx(3 / 4) and by_step[20].win_rate == pytest.approx(1.5 / 4)
        assert by_step[10].comparisons == by_step[20].comparisons == 4 and by_step[0].win_rate is None
        low, high = by_step[20].win_interval
        assert low <= 1.5 / 4 <= high
        page = admin_client.get(url).content.decode()
        assert 'id="probe-chart"' in page and "0.38" in page and "Sent: 8 pairwise tasks" in page
        assert "overoptimisation-warning" not in page  # four judgements each: the fall is within the noise
        assert admin_client.post(url, {"prompts": "0"}).status_code == 200  # a second send is refused
        assert tasks.count() == 8

    def test_a_rising_score_with_a_falling_win_rate_is_flagged_and_a_rising_one_is_not(self, artefacts):
        project = ProjectFactory(overlap=1)
        rater = UserFactory(rater=True)
        run = finished_ppo_run(project, artefacts, prompts=12)
        services.overoptimisation_tasks_create(run=run)
        judge_probe_tasks(project, rater, {10: ["later"] * 10 + ["start"] * 2, 20: ["start"] * 11 + ["later"]})
        report = selectors.overoptimisation_report(run=run)
        assert "from step 10 to step 20 the reward model's score rose from 0.50 to 0.90" in report.warning
        honest = ProjectFactory(overlap=1)
        run = finished_ppo_run(honest, artefacts, prompts=12, name="ppo-honest")
        assert services.overoptimisation_tasks_create(run=run).tasks == 24
        judge_probe_tasks(honest, rater, {10: ["later"] * 7 + ["start"] * 5, 20: ["later"] * 11 + ["start"]})
        assert selectors.overoptimisation_report(run=run).warning == ""

    def test_only_a_finished_ppo_run_with_probes_can_send_them(self, artefacts):
        project = ProjectFactory()
        bare = TrainingRun.objects.create(project=project, kind="ppo", status="succeeded", output_dir="runs/none")
        with pytest.raises(ApplicationError, match="kept no probe answers"):
            services.overoptimisation_tasks_create(run=bare)
        sft = TrainingRun.objects.create(project=project, kind="sft", status="succeeded")
        with pytest.raises(ApplicationError, match="Only a finished PPO run"):
            services.overoptimisation_tasks_create(run=sft)
