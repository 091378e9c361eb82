"""AI feedback (RLAIF): a feedback model labels the project's pair tasks by principles of a constitution; the
labels are stored as judgements with source ``ai`` beside the human ones."""

import json
from pathlib import Path

from django import forms
from django.db import transaction
from django.db.models import Count, QuerySet

from labeling import selectors
from labeling.errors import ApplicationError
from labeling.models import ComparisonTask, Constitution, Judgement, Principle, Project, TrainingRun, User
from labeling.runs.forms import RunForm
from labeling.runs.kinds.critique import constitution_or_default
from labeling.runs.outcomes import run_succeeded
from labeling.runs.spec import RunPage, RunSpec
from labeling.runs.starting import run_create
from training.config import FeedbackConfig
from training.runtime import LABELS_FILE

TASKS_PER_QUERY = 500


def pair_tasks(project: Project) -> QuerySet[ComparisonTask]:
    return ComparisonTask.objects.filter(project=project).annotate(k=Count("responses")).filter(k=2)


@transaction.atomic
def ai_feedback_run_start(
    *,
    project: Project,
    constitution: Constitution | None = None,
    principle_ids: list[int] | None = None,
    model: str = FeedbackConfig.model,
    chain_of_thought: bool = False,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue AI feedback: the feedback model labels every pair task (K = 2) of the project by each chosen
    principle with a comparison question (all active ones of the constitution by default)."""
    constitution = constitution_or_default(constitution)
    principles = constitution.principles.filter(is_active=True).exclude(comparison_question="")
    if principle_ids:
        principles = principles.filter(pk__in=[getattr(principle, "pk", principle) for principle in principle_ids])
    chosen = list(principles.values_list("pk", flat=True))
    if not chosen:
        raise ApplicationError(f"No chosen principle of '{constitution.name}' has a comparison question.")
    if not pair_tasks(project).exists():
        raise ApplicationError("AI feedback labels pairs: this project has no task with exactly two responses.")
    return run_create(
        project=project, kind=TrainingRun.Kind.AI_FEEDBACK, base_model=model, created_by=created_by,
        config={"constitution_id": constitution.pk, "principle_ids": chosen, "chain_of_thought": chain_of_thought},
    )  # fmt: skip


class AIFeedbackRunForm(RunForm):
    constitution = forms.ModelChoiceField(
        queryset=Constitution.objects.all(), required=False, empty_label="The default constitution"
    )
    principle_ids = forms.ModelMultipleChoiceField(
        queryset=Principle.objects.filter(is_active=True).exclude(comparison_question="").select_related("constitution"),
        required=False, label="Principles", help_text="None chosen: every active principle of the constitution.",
    )  # fmt: skip
    model = forms.CharField(initial=FeedbackConfig.model, help_text="The feedback model: any causal LM.")
    chain_of_thought = forms.BooleanField(required=False, help_text="Reason first; labels clamped to 0.4..0.6.")


def comparisons_write(run: TrainingRun, out_dir: Path) -> None:
    """Every pair task of the project once per chosen principle, as the file the trainer reads (written when the
    run starts, so it sees the tasks of that moment)."""
    principles = list(Principle.objects.filter(pk__in=run.config["principle_ids"]))
    task_ids = list(pair_tasks(run.project).order_by("id").values_list("pk", flat=True))
    with open(out_dir / "comparisons.jsonl", "w", encoding="utf-8") as out:
        for start in range(0, len(task_ids), TASKS_PER_QUERY):
            for task_id, content in selectors.task_contents(task_ids=task_ids[start : start + TASKS_PER_QUERY]).items():
                (first_id, first), (second_id, second) = content.texts.items()
                for principle in principles:
                    out.write(json.dumps({
                        "task_id": task_id, "principle_id": principle.pk, "prompt": content.messages,
                        "question": principle.comparison_question, "first_id": first_id,
                        "second_id": second_id, "first": first, "second": second,
                    }) + "\n")  # fmt: skip


def _arguments(run: TrainingRun, out_dir: Path) -> list[str]:
    return ["--comparisons", str(out_dir / "comparisons.jsonl")]


@transaction.atomic
def ai_labels_register(run: TrainingRun, out_dir: Path, now) -> int:
    """Each label as a judgement with source ``ai``: the preferred response first, the probability that it is
    the better one (0.5 or more), the principle, and the feedback model as origin."""
    from labeling.services import judgement_create

    with open(out_dir / LABELS_FILE, encoding="utf-8") as lines:
        labels = [json.loads(line) for line in lines if line.strip()]
    tasks = ComparisonTask.objects.in_bulk([label["task_id"] for label in labels])
    principles = Principle.objects.in_bulk([label["principle_id"] for label in labels])
    origin = f"{run.base_model}"[-200:]
    stored = 0
    for label in labels:
        task = tasks.get(label["task_id"])
        if task is None or sorted(task.response_ids()) != sorted([label["first_id"], label["second_id"]]):
            continue  # the task is gone or changed since the run started
        client_id = f"run{run.pk}-t{task.pk}-p{label['principle_id']}"
        if Judgement.objects.filter(origin=origin, client_submission_id=client_id).exists():
            continue  # stored by an earlier attempt of this run
        p = float(label["probability_first"])
        preferred, other = (
            (label["first_id"], label["second_id"]) if p >= 0.5 else (label["second_id"], label["first_id"])
        )
        judgement_create(
            task=task, ranking=[[preferred], [other]], client_submission_id=client_id,
            source=Judgement.Source.AI, origin=origin, probability=max(p, 1.0 - p),
            principle=principles[label["principle_id"]],
        )  # fmt: skip
        stored += 1
    run_succeeded(run, out_dir, now, {"labels_stored": stored})
    return stored


SPEC = RunSpec(
    kind=TrainingRun.Kind.AI_FEEDBACK,
    command="feedback",
    config=FeedbackConfig,
    start=ai_feedback_run_start,
    form=AIFeedbackRunForm,
    page=RunPage(
        "ai-feedback",
        "Label with AI feedback",
        "Start labelling",
        "label_with_ai_feedback",
        "Label pairs with AI feedback (RLAIF)",
    ),
    options=("chain_of_thought",),
    arguments=_arguments,
    prepare=comparisons_write,
    register=ai_labels_register,
)
