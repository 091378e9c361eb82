"""Reward model: trained on the project's rankings (human judgements and AI feedback labels)."""

import json
from pathlib import Path

from django import forms
from django.db import transaction

from labeling.errors import ApplicationError
from labeling.models import DatasetSnapshot, Judgement, ModelVersion, Project, RewardCheck, TrainingRun, User
from labeling.runs.forms import RunForm
from labeling.runs.kinds.ppo import ppo_run_start
from labeling.runs.outcomes import model_version_register
from labeling.runs.spec import RunPage, RunSpec
from labeling.runs.starting import model_path, run_create
from training.config import REWARD_PRESETS, RewardConfig
from training.runtime import HELD_OUT_JUDGEMENTS


@transaction.atomic
def reward_run_start(
    *,
    project: Project,
    snapshot: DatasetSnapshot | None = None,
    preset: str = "cpu",
    base_model: str = "",
    epochs: float | None = None,
    learning_rate: float | None = None,
    lora: bool = False,
    human_weight: float = 1.0,
    ai_weight: float = 1.0,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue a reward-model run on the project's rankings: a new snapshot of them (human and AI judgements,
    gold tasks included) unless one is given. ``preset`` (``training.config.REWARD_PRESETS``) gives the recipe;
    the backbone, epochs and learning rate given override it. Refused while another reward run is queued or
    running."""
    from labeling.services import dataset_snapshot_create

    if snapshot is None:  # prompts as messages, so that the trainer can keep a conversation's last turns
        snapshot = dataset_snapshot_create(
            project=project, kind=DatasetSnapshot.Kind.RANKING, conversational=True, created_by=created_by
        )
    elif snapshot.project_id != project.pk or snapshot.kind not in ("ranking", "preference"):
        raise ApplicationError("A reward run reads a ranking or preference snapshot of its own project.")
    if snapshot.row_count == 0:
        raise ApplicationError("The snapshot holds no judgements to train on.")
    if preset not in REWARD_PRESETS:
        raise ApplicationError(f"No reward preset '{preset}'; there are {', '.join(REWARD_PRESETS)}.")
    if (epochs is not None and epochs <= 0) or (learning_rate is not None and learning_rate <= 0):
        raise ApplicationError("Epochs and the learning rate must be positive.")
    if human_weight < 0 or ai_weight < 0 or human_weight + ai_weight == 0:
        raise ApplicationError("Source weights must be 0 or more, and not both 0.")
    # The current reward model is evaluated on the new run's held-out prompts, so the two compare fairly.
    current = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD, is_current=True).first()
    given = {"epochs": epochs, "learning_rate": learning_rate}
    return run_create(
        project=project, kind=TrainingRun.Kind.REWARD, snapshot=snapshot,
        base_model=base_model or REWARD_PRESETS[preset].get("model", RewardConfig.model),
        config={"preset": preset, **{name: value for name, value in given.items() if value is not None}, "lora": lora,
                "human_weight": human_weight, "ai_weight": ai_weight,
                "baseline_model_id": current.pk if current else None},
        created_by=created_by, conflict="A reward run is already queued or running for this project.",
    )  # fmt: skip


def _preset_value(name: str) -> str:
    return ", ".join(
        f"{preset} {values.get(name, getattr(RewardConfig, name))}" for preset, values in REWARD_PRESETS.items()
    )


class RewardRunForm(RunForm):
    snapshot = forms.ModelChoiceField(
        queryset=DatasetSnapshot.objects.none(),
        required=False,
        empty_label="Freeze a new snapshot of the rankings now",
        help_text="The judgements to train on.",
    )
    preset = forms.ChoiceField(
        choices=[
            ("cpu", "cpu: all-MiniLM-L6-v2, the recipe measured best on a CPU"),
            ("gpu", "gpu: SmolLM2-135M-Instruct, whole conversations (a GPU worker)"),
        ],
        initial="cpu",
        required=False,
        help_text="The recipe; the fields below, when filled, override it.",
    )
    base_model = forms.CharField(
        required=False,
        help_text="Blank: the preset's. minilm-l6, smollm2-135m-instruct, a Hugging Face id or a local path.",
    )
    epochs = forms.FloatField(
        required=False, min_value=0.01,
        help_text=f"Blank: the preset's ({_preset_value('epochs')}); early stopping may end sooner.",
    )  # fmt: skip
    learning_rate = forms.FloatField(
        required=False, min_value=1e-8, help_text=f"Blank: the preset's ({_preset_value('learning_rate')})."
    )
    lora = forms.BooleanField(required=False, help_text="Train LoRA adapters instead of every weight.")
    human_weight = forms.FloatField(
        initial=1.0, min_value=0, required=False, help_text="Loss weight of human judgements (blank: 1)."
    )
    ai_weight = forms.FloatField(
        initial=1.0, min_value=0, required=False, help_text="Loss weight of AI feedback labels (blank: 1)."
    )

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, project=project, **kwargs)
        kinds = (DatasetSnapshot.Kind.RANKING, DatasetSnapshot.Kind.PREFERENCE)
        self.limit("snapshot", self.snapshots("snapshot", *kinds).order_by("-created_at"))

    def clean_preset(self) -> str:
        return self.cleaned_data["preset"] or "cpu"

    def clean_human_weight(self) -> float:
        value = self.cleaned_data["human_weight"]
        return 1.0 if value is None else value

    def clean_ai_weight(self) -> float:
        value = self.cleaned_data["ai_weight"]
        return 1.0 if value is None else value


def _baseline(run: TrainingRun, out_dir: Path) -> list[str]:
    """The current reward model when the run started, evaluated on the run's held-out prompts."""
    baseline_id = (run.config or {}).get("baseline_model_id")
    baseline = ModelVersion.objects.filter(pk=baseline_id).first() if baseline_id is not None else None
    return ["--baseline", model_path(baseline)] if baseline is not None else []


def reward_model_register(run: TrainingRun, out_dir: Path, now) -> ModelVersion:
    """The reward model as a version (current when it is the first or beats the current one); then PPO, when the
    project starts PPO after a better reward model."""
    version = model_version_register(run, out_dir, now)
    reward_checks_store(version, out_dir / HELD_OUT_JUDGEMENTS)
    after_reward_model(version)
    return version


def reward_checks_store(version: ModelVersion, path: Path) -> int:
    """The run's verdict on each judgement it held out (training's HELD_OUT_JUDGEMENTS), kept with the version
    for the rater audit; ids of judgements gone since the snapshot are left out. Returns how many."""
    if not path.exists():
        return 0
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    known = set(
        Judgement.objects.filter(
            pk__in=[line["judgement_id"] for line in lines], task__project=version.project
        ).values_list("pk", flat=True)
    )
    checks = [
        RewardCheck(
            model_version=version, judgement_id=line["judgement_id"], agreed=line["agreed"], pairs=line["pairs"]
        )
        for line in lines
        if line["judgement_id"] in known
    ]
    RewardCheck.objects.bulk_create(checks, batch_size=2000, ignore_conflicts=True)
    return len(checks)


def after_reward_model(version: ModelVersion) -> TrainingRun | None:
    """With the project's "PPO after a better reward model" on: PPO starts against a reward model that has
    just been made current (from the current policy)."""
    project = version.project
    if not project.ppo_after_better_reward or not version.is_current:
        return None
    try:
        return ppo_run_start(project=project, reward_model=version)
    except ApplicationError:  # a PPO run is already going, or there are no prompts: nothing to start
        return None


SPEC = RunSpec(
    kind=TrainingRun.Kind.REWARD,
    command="reward",
    config=RewardConfig,
    start=reward_run_start,
    form=RewardRunForm,
    page=RunPage(
        "train-reward",
        "Train a reward model",
        "Start training",
        "train_reward_model",
        "Train a reward model on the project's rankings",
    ),
    data_flag="--data",
    options=(
        "preset",
        "epochs",
        "learning_rate",
        "max_length",
        "prompts_per_batch",
        "logging_steps",
        "eval_fraction",
        "human_weight",
        "ai_weight",
        "lora",
    ),  # fmt: skip
    arguments=_baseline,
    register=reward_model_register,
    curves=("loss", "accuracy"),
)
