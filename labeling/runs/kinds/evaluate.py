"""Evaluation runs: two or more policy versions (registered versions, base models by name, and optionally the
answers of an imported baseline) answer the same eval prompts, and every pair of versions meets on each prompt in
a blinded pairwise task, each version shown first half of the time."""

import json
from collections.abc import Sequence
from pathlib import Path

from django import forms
from django.db import transaction

from labeling import selectors
from labeling.errors import ApplicationError
from labeling.models import DatasetSnapshot, ModelVersion, Project, Prompt, Response, TrainingRun, User
from labeling.runs.forms import RunForm
from labeling.runs.outcomes import run_succeeded
from labeling.runs.spec import RunPage, RunSpec
from labeling.runs.starting import model_path, require_max_prompts, require_positive, run_create
from training.config import EvaluateConfig
from training.runtime import RESPONSES_FILE

VERSIONS_FILE = "versions.json"


def _baseline_check(project: Project, baseline: str) -> None:
    if (
        baseline
        and not Response.objects.filter(prompt__project=project, prompt__is_eval=True, origin=baseline).exists()
    ):
        raise ApplicationError(
            f"No eval prompt has an answer from '{baseline}' to compare with.", {"field": "baseline"}
        )


@transaction.atomic
def evaluation_run_start(
    *,
    project: Project,
    policies: Sequence[ModelVersion] = (),
    base_models: Sequence[str] = (),
    baseline: str = "",
    max_prompts: int = EvaluateConfig.max_prompts,
    max_new_tokens: int = EvaluateConfig.max_new_tokens,
    temperature: float = EvaluateConfig.temperature,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue ``policies`` (versions of the project) and ``base_models`` (a named default, a Hugging Face id or a
    path, each) answering ``max_prompts`` of the project's eval prompts (0: all), drawn at random, the same for
    every version. ``baseline``: an origin whose existing answers to those prompts join the comparison (the
    responses that came with the data). When it ends, each pair of versions meets on every prompt."""
    policies = list(policies)
    if any(policy.project_id != project.pk or policy.kind != ModelVersion.Kind.POLICY for policy in policies):
        raise ApplicationError("Pick policies of this project.", {"field": "policies"})
    names = [policy.name for policy in policies] + [name.strip() for name in base_models if name.strip()]
    if len(set(names)) < len(names) or baseline in names:
        raise ApplicationError("Each version may take part once.", {"field": "policies"})
    if not names:
        raise ApplicationError("An evaluation needs a policy or a base model to answer the prompts.")
    if len(names) + bool(baseline) < 2:
        raise ApplicationError("An evaluation compares two or more versions: add a policy, a base model or a baseline.")
    require_positive(max_new_tokens=max_new_tokens, temperature=temperature)
    require_max_prompts(max_prompts)
    if not Prompt.objects.filter(project=project, is_eval=True).exists():
        raise ApplicationError("The project has no eval prompts: mark some on its evaluation page first.")
    _baseline_check(project, baseline)
    from labeling.services import dataset_snapshot_create

    only_eval = selectors.ExportFilter(project_id=project.pk, eval="only")
    snapshot = dataset_snapshot_create(
        project=project, kind=DatasetSnapshot.Kind.PROMPTS, selection=only_eval, created_by=created_by
    )
    return run_create(
        project=project, kind=TrainingRun.Kind.EVALUATE, snapshot=snapshot, base_model=", ".join(names),
        created_by=created_by,
        config={"policies": [policy.pk for policy in policies], "base_models": names[len(policies):],
                "baseline": baseline, "max_prompts": max_prompts, "max_new_tokens": max_new_tokens,
                "temperature": temperature},
    )  # fmt: skip


def versions_of(run: TrainingRun) -> dict[str, ModelVersion | None]:
    """The run's versions by name: a registered policy, or None for a base model named as it is."""
    config = run.config or {}
    policies = ModelVersion.objects.in_bulk(config.get("policies", []))
    versions: dict[str, ModelVersion | None] = {
        policies[pk].name: policies[pk] for pk in config.get("policies", []) if pk in policies
    }
    versions.update({name: None for name in config.get("base_models", [])})
    return versions


def versions_file_write(run: TrainingRun, out_dir: Path) -> None:
    """The models the trainer loads, by version name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    models = {name: model_path(version) if version else name for name, version in versions_of(run).items()}
    (out_dir / VERSIONS_FILE).write_text(json.dumps(models, indent=2), encoding="utf-8")


def versions_argument(run: TrainingRun, out_dir: Path) -> list[str]:
    return ["--versions", str(out_dir / VERSIONS_FILE)]


class EvaluateRunForm(RunForm):
    policies = forms.ModelMultipleChoiceField(
        queryset=ModelVersion.objects.none(), required=False, help_text="Policies of this project to compare."
    )
    base_models = forms.CharField(
        required=False, help_text="Models by name, separated by commas: smollm2-135m-instruct, a Hugging Face id or "
        "a local path (each is a version named as written).",
    )  # fmt: skip
    baseline = forms.ChoiceField(
        required=False, choices=[], help_text="Existing answers to the eval prompts that join the comparison."
    )
    max_prompts = forms.IntegerField(
        initial=EvaluateConfig.max_prompts, min_value=0, help_text="Eval prompts to answer, drawn at random (0: all)."
    )
    max_new_tokens = forms.IntegerField(initial=EvaluateConfig.max_new_tokens, min_value=1)
    temperature = forms.FloatField(initial=EvaluateConfig.temperature, min_value=0.01)

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, project=project, **kwargs)
        self.policy_choices("policies")
        origins = (
            Response.objects.filter(prompt__project=project, prompt__is_eval=True)
            .values_list("origin", flat=True).distinct().order_by("origin")[:50]
        )  # fmt: skip
        self.fields["baseline"].choices = [("", "None"), *((origin, origin) for origin in origins)]  # type: ignore[attr-defined]

    def clean_base_models(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data["base_models"].split(",") if name.strip()]


@transaction.atomic
def evaluation_register(run: TrainingRun, out_dir: Path, now) -> int:
    """Each version's answers stored (with the version, when it is a registered one), the baseline's existing
    answers found, and the balanced blinded pairwise tasks made. Returns how many tasks were made. An empty
    answer (the model ended at once) cannot be judged: it is counted, not stored, and its pairs are left out."""
    from labeling.services import evaluation_tasks_create, response_create

    project, versions = run.project, versions_of(run)
    written: dict[int, dict[str, str]] = {}
    empty = 0
    with open(out_dir / RESPONSES_FILE, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                if record["response"].strip():
                    written.setdefault(int(record["prompt_id"]), {})[record["version"]] = record["response"]
                else:
                    empty += 1
    prompts = Prompt.objects.in_bulk(list(written))
    baseline = (run.config or {}).get("baseline", "")
    answers: dict[int, dict[str, Response]] = {}
    for prompt_id, texts in written.items():
        prompt = prompts.get(prompt_id)
        if prompt is None or prompt.project_id != project.pk:
            continue  # deleted since the snapshot, or not this project's
        answers[prompt_id] = {
            name: response_create(
                prompt=prompt,
                text=text,
                origin=name,
                model_version=versions.get(name),
                metadata={"evaluation_run": run.pk},
            )  # fmt: skip
            for name, text in texts.items()
        }
        if baseline:
            earlier = Response.objects.filter(prompt=prompt, origin=baseline).order_by("id").first()
            if earlier is not None:
                answers[prompt_id][baseline] = earlier
    made = evaluation_tasks_create(project=project, answers=answers)
    run_succeeded(
        run, out_dir, now,
        {"tasks_created": made.tasks, "shown_first": made.shown_first, "empty_responses": empty,
         "eval_prompts": len(answers)},
    )  # fmt: skip
    return made.tasks


SPEC = RunSpec(
    kind=TrainingRun.Kind.EVALUATE,
    command="evaluate",
    config=EvaluateConfig,
    start=evaluation_run_start,
    form=EvaluateRunForm,
    page=RunPage(
        "evaluate",
        "Evaluate versions",
        "Start the evaluation",
        "evaluate_versions",
        "Evaluate policy versions against each other on the eval prompts (blinded pairwise tasks)",
    ),
    data_flag="--prompts",
    model_flag="",
    options=("max_prompts", "max_new_tokens", "temperature", "batch_size", "seed"),
    arguments=versions_argument,
    prepare=versions_file_write,
    register=evaluation_register,
)
