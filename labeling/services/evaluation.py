"""Evaluation: eval prompts held out of training, evaluation runs that set model versions against each other on
them in blinded pairwise tasks, and the over-optimisation check that sends a PPO run's samples to raters."""

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from labeling.errors import ApplicationError
from labeling.models import Demonstration, Judgement, Project, Prompt, Response
from labeling.services.content import comparison_task_create


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
def evaluation_tasks_create(*, project: Project, answers: dict[int, dict[str, Response]]) -> EvaluationTasks:
    """One pairwise task per prompt and pair of versions that both answered it (``answers``: prompt id ->
    version name -> its answer). The tasks keep their order for every rater, and the order alternates within
    each pair of versions (starting on alternate sides for alternate pairs), so that each version is shown
    first in half of its tasks, to within one per pair. Raters see no origin: only the texts. The tasks take
    the project's overlap, and the lease's gold and quality rules apply to them as to any other."""
    names = sorted({name for per_prompt in answers.values() for name in per_prompt})
    pairs = list(itertools.combinations(names, 2))
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
