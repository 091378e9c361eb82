"""Evaluation: eval prompts held out of training, evaluation runs that set model versions against each other on
them in blinded pairwise tasks, and the over-optimisation check that sends a PPO run's samples to raters."""

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from labeling.errors import ApplicationError, Conflict
from labeling.models import Demonstration, Judgement, Project, Prompt, Response, TrainingRun
from labeling.selectors import probe_origin, probe_records
from labeling.services.content import comparison_task_create, response_create


@dataclass(frozen=True)
class EvalSplit:
    marked: int  # prompts this call made eval prompts
    eval_prompts: int  # the project's eval prompts after it
    prompts: int  # all the project's prompts
    already_used: int  # of those marked: prompts that had judgements or demonstrations (perhaps trained on)


def _used_in_training(prompts: QuerySet[Prompt]) -> QuerySet[Prompt]:
    judged = Judgement.objects.filter(task__prompt=OuterRef("pk"))
    demonstrated = Demonstration.objects.filter(prompt=OuterRef("pk"))
    return prompts.filter(Exists(judged) | Exists(demonstrated))


@transaction.atomic
def eval_prompts_split(*, project: Project, fraction: float, seed: int = 0) -> EvalSplit:
    """Mark training prompts of ``project`` as eval prompts, drawn at random (``seed``: the same data and seed
    draw the same prompts), until eval prompts are ``fraction`` of all its prompts. Eval prompts stay eval
    prompts: a split only adds (unmark prompts on the prompt list), so an evaluation keeps its prompts."""
    if not 0.0 < fraction < 1.0:
        raise ApplicationError("The eval fraction must lie between 0 and 1 (for example 0.1).", {"field": "fraction"})
    prompts = Prompt.objects.filter(project=project)
    total = prompts.count()
    have = prompts.filter(is_eval=True).count()
    wanted = round(fraction * total) - have
    if wanted <= 0:
        return EvalSplit(marked=0, eval_prompts=have, prompts=total, already_used=0)
    training = np.fromiter(prompts.filter(is_eval=False).order_by("id").values_list("id", flat=True), dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(training, size=min(wanted, training.size), replace=False)
    marked = prompts.filter(pk__in=chosen.tolist())
    used = _used_in_training(marked).count()
    count = marked.update(is_eval=True)
    return EvalSplit(marked=count, eval_prompts=have + count, prompts=total, already_used=used)


@transaction.atomic
def prompts_eval_set(*, prompts: QuerySet[Prompt], is_eval: bool) -> int:
    """Mark ``prompts`` as eval prompts (``is_eval``) or as training prompts; returns how many changed."""
    return prompts.exclude(is_eval=is_eval).update(is_eval=is_eval)


@dataclass(frozen=True)
class EvaluationTasks:
    tasks: int
    shown_first: dict[str, int]  # version name -> tasks that show its answer first
    pairs: dict[str, int]  # "a | b" -> tasks comparing the two


@transaction.atomic
def evaluation_tasks_create(
    *, project: Project, answers: dict[int, dict[str, Response]], against: str | None = None
) -> EvaluationTasks:
    """One pairwise task per prompt and pair of versions that both answered it (``answers``: prompt id ->
    version name -> its answer), or only the pairs of each version with ``against``. The tasks keep their order
    for every rater, and the order alternates within each pair of versions (starting on alternate sides for
    alternate pairs), so that each version is shown first in half of its tasks, to within one per pair. Raters
    see no origin: only the texts. The tasks take the project's overlap, and the lease's gold and quality rules
    apply to them as to any other."""
    names = sorted({name for per_prompt in answers.values() for name in per_prompt})
    pairs = list(itertools.combinations(names, 2))
    if against is not None:
        pairs = [pair for pair in pairs if against in pair]
    made: Counter = Counter()
    first: Counter = Counter()
    prompts = Prompt.objects.in_bulk(list(answers))
    for prompt_id in sorted(answers):
        per_prompt = answers[prompt_id]
        for index, (one, other) in enumerate(pairs):
            if one not in per_prompt or other not in per_prompt:
                continue
            key = f"{one} | {other}"
            order = (one, other) if (made[key] + index) % 2 == 0 else (other, one)
            comparison_task_create(
                project=project,
                prompt=prompts[prompt_id],
                responses=[per_prompt[order[0]], per_prompt[order[1]]],
                required_judgements=project.overlap,
                keep_order=True,
            )
            made[key] += 1
            first[order[0]] += 1
    return EvaluationTasks(tasks=sum(made.values()), shown_first=dict(first), pairs=dict(made))


@transaction.atomic
def overoptimisation_tasks_create(*, run: TrainingRun, prompts: int = 0) -> EvaluationTasks:
    """Send a finished PPO run's probe answers to raters: at each probe point after the start, each probe
    prompt's answer against the starting policy's answer to the same prompt, in a blinded pairwise task
    (balanced as an evaluation's are). ``prompts``: that many probe prompts (0: all). Once per run."""
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.kind != TrainingRun.Kind.PPO or run.status != TrainingRun.Status.SUCCEEDED:
        raise ApplicationError("Only a finished PPO run has probe answers to send.")
    if (run.metrics or {}).get("overoptimisation_sent"):
        raise Conflict(f"Run {run.pk}'s probe answers were sent to raters already.")
    records = probe_records(run)
    steps = sorted({record["step"] for record in records})
    if len(steps) < 2 or steps[0] != 0:
        raise ApplicationError(f"Run {run.pk} kept no probe answers at the start and later: nothing to compare.")
    chosen = sorted({record["prompt_id"] for record in records})
    if prompts:
        chosen = chosen[:prompts]
    by_id = Prompt.objects.in_bulk(chosen)
    start = probe_origin(run, 0)
    answers: dict[int, dict[str, Response]] = {}
    for record in records:
        prompt = by_id.get(record["prompt_id"])
        if prompt is None or prompt.project_id != run.project_id or not record["response"].strip():
            continue  # deleted since, or an empty answer that cannot be judged
        answers.setdefault(prompt.pk, {})[probe_origin(run, record["step"])] = response_create(
            prompt=prompt, text=record["response"], origin=probe_origin(run, record["step"]),
            metadata={"ppo_run": run.pk, "step": record["step"], "score": record["score"], "kl": record["kl"]},
        )  # fmt: skip
    answers = {prompt_id: answer for prompt_id, answer in answers.items() if start in answer}
    made = evaluation_tasks_create(project=run.project, answers=answers, against=start)
    run.metrics = {**(run.metrics or {}), "overoptimisation_sent": {"tasks": made.tasks, "prompts": len(answers)}}
    run.save(update_fields=["metrics"])
    return made
