"""Critique and revise (SL-CAI): the model answers, then criticises and revises its answer by principles of a
constitution; raters review the chains, and accepted revisions become demonstrations."""

import json
from pathlib import Path

from django import forms
from django.db import transaction

from labeling.errors import ApplicationError
from labeling.models import (
    Constitution,
    CritiqueChain,
    CritiqueRound,
    DatasetSnapshot,
    ModelVersion,
    Principle,
    Project,
    Prompt,
    TrainingRun,
    User,
)
from labeling.runs.forms import ModelVersionChoiceField, RunForm
from labeling.runs.outcomes import run_succeeded
from labeling.runs.spec import RunPage, RunSpec
from labeling.runs.starting import own_model, require_max_prompts, require_positive, run_create, snapshot_for
from training.config import CritiqueConfig
from training.runtime import CHAINS_FILE

MAX_PROMPTS = 50  # what the admin form suggests (the service's default, None, answers every prompt)


def constitution_or_default(constitution: Constitution | None) -> Constitution:
    constitution = constitution or Constitution.objects.filter(is_default=True).first()
    if constitution is None:
        raise ApplicationError("Pick a constitution (there is no default one).")
    return constitution


@transaction.atomic
def critique_run_start(
    *,
    project: Project,
    constitution: Constitution | None = None,
    policy: ModelVersion | None = None,
    base_model: str = CritiqueConfig.model,
    snapshot: DatasetSnapshot | None = None,
    rounds: int = CritiqueConfig.rounds,
    max_prompts: int | None = None,
    max_new_tokens: int = CritiqueConfig.max_new_tokens,
    temperature: float = CritiqueConfig.temperature,
    few_shot: str = "",
    created_by: User | None = None,
) -> TrainingRun:
    """Queue SL-CAI on a ``prompts`` snapshot (a new one unless given): the model (the policy given, else the
    project's current policy, else ``base_model``) answers, then criticises and revises its answer for
    ``rounds`` rounds by principles drawn from the constitution (the default unless given)."""
    constitution = constitution_or_default(constitution)
    if not constitution.principles.filter(is_active=True).exclude(critique_request="").exists():
        raise ApplicationError(f"No active principle of '{constitution.name}' has a critique request.")
    policy = own_model(project, policy, ModelVersion.Kind.POLICY)
    require_positive(rounds=rounds, max_new_tokens=max_new_tokens, temperature=temperature)
    require_max_prompts(max_prompts)
    snapshot = snapshot_for(project, snapshot, DatasetSnapshot.Kind.PROMPTS, created_by)
    return run_create(
        project=project, kind=TrainingRun.Kind.CRITIQUE, snapshot=snapshot, parent_model=policy,
        base_model=policy.name if policy else base_model, created_by=created_by,
        config={"constitution_id": constitution.pk, "rounds": rounds, "max_new_tokens": max_new_tokens,
                "temperature": temperature, "few_shot": few_shot, "max_prompts": max_prompts or 0},
    )  # fmt: skip


class CritiqueRunForm(RunForm):
    constitution = forms.ModelChoiceField(
        queryset=Constitution.objects.all(), required=False, empty_label="The default constitution"
    )
    policy = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(), required=False,
        empty_label="The current policy (or the base model below if there is none)",
    )  # fmt: skip
    base_model = forms.CharField(initial=CritiqueConfig.model)
    snapshot = forms.ModelChoiceField(
        queryset=DatasetSnapshot.objects.none(), required=False, empty_label="Freeze a snapshot of every prompt now"
    )
    rounds = forms.IntegerField(initial=CritiqueConfig.rounds, min_value=1, max_value=8)
    max_prompts = forms.IntegerField(
        initial=MAX_PROMPTS, min_value=0, required=False,
        help_text="Work on this many prompts of the snapshot, drawn at random (0 or blank: all of them).",
    )  # fmt: skip
    few_shot = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Optional: worked examples put before every critique prompt.",
    )  # fmt: skip
    max_new_tokens = forms.IntegerField(initial=CritiqueConfig.max_new_tokens, min_value=1)
    temperature = forms.FloatField(initial=CritiqueConfig.temperature, min_value=0.01)

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, project=project, **kwargs)
        self.policy_choices("policy")
        self.snapshots("snapshot", DatasetSnapshot.Kind.PROMPTS)


def principles_write(run: TrainingRun, out_dir: Path) -> None:
    """The constitution's active principles and the few-shot text, as files the trainer reads."""
    config = run.config or {}
    principles = Principle.objects.filter(constitution_id=config["constitution_id"], is_active=True)
    rows = [
        {"id": p.pk, "name": p.name, "critique_request": p.critique_request,
         "revision_request": p.revision_request, "comparison_question": p.comparison_question}
        for p in principles
    ]  # fmt: skip
    (out_dir / "principles.json").write_text(json.dumps(rows))
    (out_dir / "few_shot.txt").write_text(config.get("few_shot", ""), encoding="utf-8")


def _files(run: TrainingRun, out_dir: Path) -> list[str]:
    return ["--principles", str(out_dir / "principles.json"), "--few-shot", str(out_dir / "few_shot.txt")]


@transaction.atomic
def chains_register(run: TrainingRun, out_dir: Path, now) -> int:
    """Every chain the run wrote, with its rounds; chains on prompts that are gone are left out."""
    constitution = Constitution.objects.get(pk=run.config["constitution_id"])
    principles = Principle.objects.in_bulk()
    stored = 0
    with open(out_dir / CHAINS_FILE, encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    prompts = Prompt.objects.in_bulk([record["prompt_id"] for record in records])
    for record in records:
        prompt = prompts.get(record["prompt_id"])
        if prompt is None or prompt.project_id != run.project_id or not record["rounds"]:
            continue
        chain = CritiqueChain.objects.create(
            project=run.project, prompt=prompt, constitution=constitution, training_run=run,
            model_name=run.base_model, initial_response=record["initial_response"],
            final_revision=record["rounds"][-1]["revision"],
        )  # fmt: skip
        CritiqueRound.objects.bulk_create(
            CritiqueRound(chain=chain, number=round_["number"], principle=principles[round_["principle_id"]],
                          critique=round_["critique"], revision=round_["revision"])
            for round_ in record["rounds"]
        )  # fmt: skip
        stored += 1
    run_succeeded(run, out_dir, now, {"chains_stored": stored})
    return stored


SPEC = RunSpec(
    kind=TrainingRun.Kind.CRITIQUE,
    command="critique",
    config=CritiqueConfig,
    start=critique_run_start,
    form=CritiqueRunForm,
    page=RunPage(
        "critique",
        "Critique and revise",
        "Start",
        "critique_and_revise",
        "Critique and revise (SL-CAI) with a constitution",
    ),
    data_flag="--prompts",
    options=("rounds", "max_prompts", "max_new_tokens", "temperature", "seed"),
    arguments=_files,
    prepare=principles_write,
    register=chains_register,
)
