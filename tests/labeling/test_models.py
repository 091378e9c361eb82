"""Bad rows are refused: by a database constraint where one row can tell, by ``clean()`` otherwise."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from labeling import services
from labeling.errors import ApplicationError
from labeling.models import (
    Assignment,
    ComparisonTask,
    DatasetSnapshot,
    Demonstration,
    Judgement,
    ModelVersion,
    Project,
    Prompt,
    TaskResponse,
    TrainingRun,
)
from tests.factories import ProjectFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db


def refused_by_database(create) -> bool:
    """True when the database itself rejects the write (checked without Django's validation)."""
    try:
        with transaction.atomic():
            create()
    except IntegrityError:
        return True
    return False


def judgement_kwargs(task, **overrides):
    response_ids = task.response_ids()
    kwargs = {
        "task": task,
        "ranking": [[response_id] for response_id in response_ids],
        "origin": "tests",
        "client_submission_id": f"submission-{task.pk}-{len(overrides)}",
    }
    kwargs.update(overrides)
    return kwargs


class TestProject:
    @pytest.mark.parametrize("k", [0, 1, 10, 20])
    def test_k_outside_2_to_9_is_refused_by_the_database_and_by_validation(self, k):
        assert refused_by_database(lambda: Project.objects.create(name="P", slug="p", responses_per_task=k))
        with pytest.raises(ValidationError, match="between 2 and 9"):
            Project(name="P", slug="p", responses_per_task=k).full_clean()

    @pytest.mark.parametrize("k", [2, 9])
    def test_k_at_the_bounds_is_accepted(self, k):
        project = Project(name="P", slug=f"p{k}", responses_per_task=k)
        project.full_clean()
        project.save()
        assert Project.objects.get(slug=f"p{k}").responses_per_task == k

    @pytest.mark.parametrize(
        "fields",
        [
            {"overlap": 0},
            {"gold_rate": 1.5},
            {"gold_rate": -0.1},
            {"lease_timeout": timedelta(0)},
            {"compare_enabled": False, "rank_enabled": False, "rate_enabled": False, "demonstrate_enabled": False},
        ],
    )
    def test_impossible_settings_are_refused_by_the_database(self, fields):
        assert refused_by_database(lambda: Project.objects.create(name="P", slug="p", **fields))

    def test_task_kinds_lists_what_is_enabled(self):
        project = Project(compare_enabled=True, rank_enabled=False, rate_enabled=True, demonstrate_enabled=False)
        assert project.task_kinds == ["compare", "rate"]


class TestPrompt:
    @pytest.mark.parametrize(
        "messages, message",
        [
            ([], "non-empty list"),
            ("What is 2+2?", "non-empty list"),
            ([{"role": "user"}], "exactly 'role' and 'content'"),
            ([{"role": "robot", "content": "hi"}], "role 'robot'"),
            ([{"role": "user", "content": "  "}], "empty content"),
            ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "must come from the user"),
        ],
    )
    def test_malformed_conversations_are_refused(self, project, messages, message):
        with pytest.raises(ApplicationError, match=message):
            services.prompt_create(project=project, messages=messages)
        assert not Prompt.objects.exists()

    def test_a_multi_turn_conversation_is_accepted(self, project):
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Name a prime."},
        ]
        prompt = services.prompt_create(project=project, messages=messages)
        assert Prompt.objects.get(pk=prompt.pk).messages == messages
        assert prompt.text == "Name a prime."

    def test_external_id_is_unique_within_a_project_only(self, project):
        other = ProjectFactory()
        PromptFactory(project=project, external_id="x-1")
        PromptFactory(project=other, external_id="x-1")
        PromptFactory(project=project, external_id="")
        PromptFactory(project=project, external_id="")
        assert refused_by_database(lambda: PromptFactory(project=project, external_id="x-1"))
        with pytest.raises(ApplicationError, match="external id already exists"):
            services.prompt_create(project=project, messages=[{"role": "user", "content": "q"}], external_id="x-1")


class TestComparisonTask:
    @pytest.mark.parametrize("k", [1, 10])
    def test_k_outside_2_to_9_is_refused(self, project, k):
        prompt = PromptFactory(project=project)
        responses = ResponseFactory.create_batch(k, prompt=prompt)
        with pytest.raises(ApplicationError, match="between 2 and 9"):
            services.comparison_task_create(project=project, prompt=prompt, responses=responses)
        assert not ComparisonTask.objects.exists()

    def test_a_tenth_position_is_refused_by_the_database(self, make_task):
        task = make_task(k=2)
        extra = ResponseFactory(prompt=task.prompt)
        assert refused_by_database(lambda: TaskResponse.objects.create(task=task, response=extra, position=9))

    def test_responses_to_another_prompt_are_refused_and_nothing_is_written(self, project):
        prompt = PromptFactory(project=project)
        stranger = ResponseFactory(prompt=PromptFactory(project=project))
        responses = [ResponseFactory(prompt=prompt), stranger]
        with pytest.raises(ApplicationError, match="must answer the task's prompt"):
            services.comparison_task_create(project=project, prompt=prompt, responses=responses)
        assert not ComparisonTask.objects.exists()
        assert not TaskResponse.objects.exists()

    def test_a_prompt_of_another_project_is_refused(self, project):
        prompt = PromptFactory(project=ProjectFactory())
        responses = ResponseFactory.create_batch(2, prompt=prompt)
        with pytest.raises(ApplicationError, match="another project"):
            services.comparison_task_create(project=project, prompt=prompt, responses=responses)

    def test_required_judgements_default_to_the_project_overlap(self, make_task, project):
        assert make_task(k=3).required_judgements == project.overlap == 2

    def test_a_gold_ranking_must_rank_exactly_the_tasks_responses(self, project):
        prompt = PromptFactory(project=project)
        responses = ResponseFactory.create_batch(3, prompt=prompt)
        ids = [response.pk for response in responses]
        with pytest.raises(ApplicationError, match="leaves out"):
            services.comparison_task_create(
                project=project, prompt=prompt, responses=responses, gold_ranking=[[ids[0]], [ids[1]]]
            )
        task = services.comparison_task_create(
            project=project, prompt=prompt, responses=responses, gold_ranking=[[ids[2]], [ids[0], ids[1]]]
        )
        assert task.is_gold and task.gold_ranking == [[ids[2]], [ids[0], ids[1]]]

    def test_gold_flag_and_ranking_go_together_in_the_database(self, make_task):
        task = make_task(k=2)
        assert refused_by_database(lambda: ComparisonTask.objects.filter(pk=task.pk).update(is_gold=True))
        assert refused_by_database(lambda: ComparisonTask.objects.filter(pk=task.pk).update(gold_ranking=[[1]]))

    def test_an_unknown_status_is_refused_by_the_database(self, make_task):
        task = make_task(k=2)
        assert refused_by_database(lambda: ComparisonTask.objects.filter(pk=task.pk).update(status="lost"))


class TestAssignment:
    def test_a_rater_holds_at_most_one_assignment_per_task(self, make_task, rater):
        task = make_task()
        now = timezone.now()
        Assignment.objects.create(task=task, rater=rater, leased_at=now, expires_at=now + timedelta(minutes=5))
        assert refused_by_database(
            lambda: Assignment.objects.create(task=task, rater=rater, leased_at=now, expires_at=now + timedelta(1))
        )

    def test_a_lease_must_end_after_it_starts(self, make_task, rater):
        now = timezone.now()
        assert refused_by_database(
            lambda: Assignment.objects.create(task=make_task(), rater=rater, leased_at=now, expires_at=now)
        )


class TestJudgement:
    def test_a_full_ranking_with_ties_is_stored(self, make_task, rater):
        task = make_task(k=4)
        a, b, c, d = task.response_ids()
        judgement = services.judgement_create(
            task=task, rater=rater, ranking=[[c], [a, d], [b]], client_submission_id="s1", shown_order=[d, c, b, a]
        )
        stored = Judgement.objects.get(pk=judgement.pk)
        assert stored.ranking == [[c], [a, d], [b]]
        assert stored.shown_order == [d, c, b, a]

    def test_a_ranking_that_names_a_response_of_another_task_is_refused(self, make_task, rater):
        task, other = make_task(k=2), make_task(k=2)
        a, _ = task.response_ids()
        foreign = other.response_ids()[0]
        with pytest.raises(ApplicationError, match=rf"ranking: .*not part of this task: \[{foreign}\]"):
            services.judgement_create(task=task, rater=rater, ranking=[[a], [foreign]], client_submission_id="s")
        assert not Judgement.objects.exists()

    @pytest.mark.parametrize(
        "ranking, message",
        [
            ([], "non-empty list"),
            ([[]], "non-empty list of response ids"),
            ("first", "non-empty list"),
            (None, "non-empty list"),
        ],
    )
    def test_malformed_rankings_are_refused(self, make_task, rater, ranking, message):
        with pytest.raises(ApplicationError, match=message):
            services.judgement_create(task=make_task(), rater=rater, ranking=ranking, client_submission_id="s")

    def test_a_ranking_that_repeats_or_omits_a_response_is_refused(self, make_task, rater):
        task = make_task(k=3)
        a, b, c = task.response_ids()
        with pytest.raises(ApplicationError, match="more than once"):
            services.judgement_create(task=task, rater=rater, ranking=[[a], [b], [c, a]], client_submission_id="s")
        with pytest.raises(ApplicationError, match=rf"leaves out responses of this task: \[{c}\]"):
            services.judgement_create(task=task, rater=rater, ranking=[[a, b]], client_submission_id="s")

    @pytest.mark.parametrize("score", [0, 8, -1, 3.5, "5", True])
    def test_likert_scores_outside_1_to_7_are_refused(self, make_task, rater, score):
        task = make_task(k=2)
        a, b = task.response_ids()
        with pytest.raises(ApplicationError, match="likert: The Likert score"):
            services.judgement_create(
                task=task, rater=rater, ranking=[[a], [b]], likert={str(a): score}, client_submission_id="s"
            )

    def test_likert_scores_from_1_to_7_are_accepted(self, make_task, rater):
        task = make_task(k=2)
        a, b = task.response_ids()
        judgement = services.judgement_create(
            task=task, rater=rater, ranking=[[a], [b]], likert={str(a): 7, str(b): 1}, client_submission_id="s"
        )
        assert Judgement.objects.get(pk=judgement.pk).likert == {str(a): 7, str(b): 1}

    def test_likert_for_a_response_outside_the_task_is_refused(self, make_task, rater):
        task, other = make_task(k=2), make_task(k=2)
        a, b = task.response_ids()
        with pytest.raises(ApplicationError, match="not part of this task"):
            services.judgement_create(
                task=task,
                rater=rater,
                ranking=[[a], [b]],
                likert={str(other.response_ids()[0]): 4},
                client_submission_id="s",
            )

    def test_only_known_flags_are_accepted(self, make_task, rater):
        task = make_task(k=2)
        a, b = task.response_ids()
        with pytest.raises(ApplicationError, match="Unknown flag 'boring'"):
            services.judgement_create(
                task=task, rater=rater, ranking=[[a], [b]], flags={str(a): ["boring"]}, client_submission_id="s"
            )
        judgement = services.judgement_create(
            task=task,
            rater=rater,
            ranking=[[a], [b]],
            flags={str(b): [Judgement.Flag.HALLUCINATION, Judgement.Flag.HARMFUL_ADVICE]},
            client_submission_id="s",
        )
        assert judgement.flags == {str(b): ["hallucination", "harmful_advice"]}

    def test_the_shown_order_must_be_a_permutation_of_the_responses(self, make_task, rater):
        task = make_task(k=3)
        a, b, c = task.response_ids()
        with pytest.raises(ApplicationError, match="shown_order"):
            services.judgement_create(
                task=task, rater=rater, ranking=[[a, b, c]], shown_order=[a, b], client_submission_id="s"
            )

    def test_a_client_submission_id_is_stored_once_per_rater(self, make_task, rater, other_rater):
        first, second = make_task(), make_task()
        services.judgement_create(task=first, rater=rater, ranking=[first.response_ids()], client_submission_id="same")
        services.judgement_create(
            task=first, rater=other_rater, ranking=[first.response_ids()], client_submission_id="same"
        )
        assert refused_by_database(
            lambda: Judgement.objects.create(
                task=second, rater=rater, ranking=[second.response_ids()], client_submission_id="same"
            )
        )

    def test_a_rater_judges_a_task_once(self, make_task, rater):
        task = make_task()
        services.judgement_create(task=task, rater=rater, ranking=[task.response_ids()], client_submission_id="1")
        assert refused_by_database(
            lambda: Judgement.objects.create(
                task=task, rater=rater, ranking=[task.response_ids()], client_submission_id="2"
            )
        )

    def test_an_ai_label_has_no_rater_and_names_its_model(self, make_task, rater):
        task = make_task()
        ranking = [[response_id] for response_id in task.response_ids()]
        assert refused_by_database(
            lambda: Judgement.objects.create(
                task=task, rater=rater, source="ai", origin="m", ranking=ranking, client_submission_id="a"
            )
        )
        assert refused_by_database(
            lambda: Judgement.objects.create(task=task, source="ai", ranking=ranking, client_submission_id="b")
        )
        label = services.judgement_create(
            task=task, source="ai", origin="smollm2", ranking=ranking, probability=0.73, client_submission_id="c"
        )
        assert (label.rater, label.source, label.probability) == (None, "ai", 0.73)

    @pytest.mark.parametrize(
        "fields",
        [
            {"probability": 1.5},
            {"probability": -0.2},
            {"seconds_spent": -1.0},
            {"margin": -0.5},
            {"margin": 3.5},
            {"source": "x"},
        ],
    )
    def test_out_of_range_numbers_are_refused_by_the_database(self, make_task, fields):
        task = make_task()
        kwargs = judgement_kwargs(task, **fields)
        assert refused_by_database(lambda: Judgement.objects.create(**kwargs))

    def test_an_empty_client_submission_id_is_refused(self, make_task, rater):
        task = make_task()
        assert refused_by_database(
            lambda: Judgement.objects.create(task=task, rater=rater, ranking=[task.response_ids()])
        )


class TestDemonstration:
    def test_a_demonstration_needs_text_and_an_author_or_origin(self, project, rater):
        prompt = PromptFactory(project=project)
        assert refused_by_database(lambda: Demonstration.objects.create(prompt=prompt, author=rater, text=""))
        assert refused_by_database(lambda: Demonstration.objects.create(prompt=prompt, text="An ideal reply."))
        demonstration = services.demonstration_create(prompt=prompt, author=rater, text="An ideal reply.")
        assert demonstration.author == rater


class TestTrainingTables:
    def test_only_one_current_model_per_kind_and_project(self, project):
        ModelVersion.objects.create(project=project, kind="reward", name="rm-1", is_current=True)
        ModelVersion.objects.create(project=project, kind="policy", name="policy-1", is_current=True)
        ModelVersion.objects.create(project=project, kind="reward", name="rm-2", is_current=False)
        assert refused_by_database(
            lambda: ModelVersion.objects.create(project=project, kind="reward", name="rm-3", is_current=True)
        )
        assert refused_by_database(lambda: ModelVersion.objects.create(project=project, kind="reward", name="rm-1"))

    @pytest.mark.parametrize("fields", [{"progress": 1.5}, {"status": "exploded"}, {"kind": "magic"}])
    def test_training_runs_refuse_impossible_values(self, project, fields):
        assert refused_by_database(lambda: TrainingRun.objects.create(project=project, **{"kind": "reward", **fields}))

    def test_a_run_cannot_finish_before_it_starts(self, project):
        now = timezone.now()
        assert refused_by_database(
            lambda: TrainingRun.objects.create(
                project=project, kind="reward", started_at=now, finished_at=now - timedelta(seconds=1)
            )
        )

    def test_model_lineage_links_snapshot_run_and_parent(self, project):
        snapshot = DatasetSnapshot.objects.create(project=project, kind="ranking", path="s.jsonl", sha256="0" * 64)
        run = TrainingRun.objects.create(project=project, kind="reward", snapshot=snapshot)
        base = ModelVersion.objects.create(project=project, kind="policy", name="sft")
        child = ModelVersion.objects.create(
            project=project, kind="policy", name="ppo-1", parent=base, snapshot=snapshot, training_run=run
        )
        assert (run.model_version, base.children.get(), snapshot.model_versions.get()) == (child, child, child)

    def test_a_snapshot_kind_must_be_known(self, project):
        assert refused_by_database(
            lambda: DatasetSnapshot.objects.create(project=project, kind="csv", path="x", sha256="0" * 64)
        )
