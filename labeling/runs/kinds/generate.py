"""Generate responses: a policy answers the project's prompts, and each prompt gets a new comparison task that
mixes its answers with earlier responses."""

import json
import random
from pathlib import Path

from django import forms
from django.db import transaction

from labeling.errors import ApplicationError
from labeling.models import DatasetSnapshot, ModelVersion, Project, Prompt, Response, TrainingRun, User
from labeling.runs.forms import ModelVersionChoiceField, RunForm
from labeling.runs.outcomes import run_succeeded
from labeling.runs.spec import RunPage, RunSpec
from labeling.runs.starting import own_model, require_max_prompts, require_positive, run_create, snapshot_for
from training.config import GenerateConfig
from training.runtime import RESPONSES_FILE

MAX_PROMPTS = 50  # what the admin form suggests (the service's default, None, answers every prompt)


@transaction.atomic
def generate_run_start(
    *,
    project: Project,
    policy: ModelVersion | None = None,
    snapshot: DatasetSnapshot | None = None,
    samples: int = GenerateConfig.samples,
    max_prompts: int | None = None,
    max_new_tokens: int = GenerateConfig.max_new_tokens,
    temperature: float = GenerateConfig.temperature,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue ``policy`` (default: the current policy) writing ``samples`` responses to each prompt of a
    ``prompts`` snapshot (a new one of every prompt unless given), or to ``max_prompts`` of them drawn at
    random. When it ends, each prompt gets a comparison task mixing the new responses with earlier ones."""
    policy = own_model(project, policy, ModelVersion.Kind.POLICY)
    if policy is None:
        raise ApplicationError("Generating needs a policy: run SFT or PPO and make one current, or pick one.")
    require_positive(samples=samples, max_new_tokens=max_new_tokens, temperature=temperature)
    require_max_prompts(max_prompts)
    if samples > project.responses_per_task:
        raise ApplicationError(f"At most {project.responses_per_task} new responses per prompt fit in one task.")
    snapshot = snapshot_for(project, snapshot, DatasetSnapshot.Kind.PROMPTS, created_by)
    return run_create(
        project=project, kind=TrainingRun.Kind.GENERATE, snapshot=snapshot, parent_model=policy,
        base_model=policy.name, created_by=created_by,
        config={"samples": samples, "max_new_tokens": max_new_tokens, "temperature": temperature,
                "max_prompts": max_prompts or 0},
    )  # fmt: skip


class GenerateRunForm(RunForm):
    policy = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(), required=False, empty_label="The current policy"
    )
    snapshot = forms.ModelChoiceField(
        queryset=DatasetSnapshot.objects.none(), required=False, empty_label="Freeze a snapshot of every prompt now",
        help_text="Each of these prompts gets new responses and a comparison task.",
    )  # fmt: skip
    samples = forms.IntegerField(
        initial=GenerateConfig.samples, min_value=1, max_value=9, help_text="New responses per prompt."
    )
    max_prompts = forms.IntegerField(
        initial=MAX_PROMPTS, min_value=0, required=False,
        help_text="Answer this many prompts of the snapshot, drawn at random (0 or blank: all of them).",
    )  # fmt: skip
    max_new_tokens = forms.IntegerField(initial=GenerateConfig.max_new_tokens, min_value=1)
    temperature = forms.FloatField(initial=GenerateConfig.temperature, min_value=0.01)

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, project=project, **kwargs)
        self.policy_choices("policy")
        self.snapshots("snapshot", DatasetSnapshot.Kind.PROMPTS)


@transaction.atomic
def generations_register(run: TrainingRun, out_dir: Path, now) -> int:
    """The generated responses, stored with their model version, and one comparison task per prompt that
    mixes them with earlier responses to that prompt (other origins first, newest first), shuffled. Returns
    how many tasks were made. An empty response (the model ended at once) cannot be judged: it is counted,
    not stored."""
    from labeling.services import comparison_task_create, response_create

    policy, project = run.parent_model, run.project
    if policy is None:
        raise ApplicationError(f"Generation run {run.pk} names no policy.")
    written: dict[int, list[str]] = {}
    empty = 0
    with open(out_dir / RESPONSES_FILE, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                texts = written.setdefault(int(record["prompt_id"]), [])
                if record["response"].strip():
                    texts.append(record["response"])
                else:
                    empty += 1
    prompts = Prompt.objects.in_bulk(list(written), field_name="pk")
    order = random.Random(run.pk)
    tasks = responses = 0
    for prompt_id, texts in written.items():
        prompt = prompts.get(prompt_id)
        if prompt is None or prompt.project_id != project.pk:
            continue  # deleted since the snapshot, or not this project's
        new = [response_create(prompt=prompt, text=text, model_version=policy) for text in texts]
        responses += len(new)
        earlier = list(
            Response.objects.filter(prompt=prompt).exclude(pk__in=[response.pk for response in new])
            .exclude(origin=policy.name).order_by("-created_at", "-id")[: max(project.responses_per_task - len(new), 0)]
        )  # fmt: skip
        chosen = new + earlier
        if len(chosen) < 2:
            continue
        order.shuffle(chosen)
        comparison_task_create(project=project, prompt=prompt, responses=chosen)
        tasks += 1
    run_succeeded(run, out_dir, now, {"responses_stored": responses, "tasks_created": tasks, "empty_responses": empty})
    return tasks


SPEC = RunSpec(
    kind=TrainingRun.Kind.GENERATE,
    command="generate",
    config=GenerateConfig,
    start=generate_run_start,
    form=GenerateRunForm,
    page=RunPage(
        "generate",
        "Generate responses",
        "Start generating",
        "generate_responses",
        "Generate responses with a policy (new comparison tasks)",
    ),
    data_flag="--prompts",
    options=("samples", "max_prompts", "max_new_tokens", "temperature", "batch_size", "seed"),
    register=generations_register,
)
