"""Supervised fine-tuning of a policy on the project's demonstrations."""

from django import forms
from django.db import transaction

from labeling.models import DatasetSnapshot, ModelVersion, Project, TrainingRun, User
from labeling.runs.forms import ModelVersionChoiceField, RunForm
from labeling.runs.outcomes import model_version_register
from labeling.runs.spec import RunPage, RunSpec
from labeling.runs.starting import own_model, require_positive, run_create, snapshot_for
from training.config import SFTConfig


@transaction.atomic
def sft_run_start(
    *,
    project: Project,
    snapshot: DatasetSnapshot | None = None,
    base_model: str = SFTConfig.model,
    parent: ModelVersion | None = None,
    epochs: float = SFTConfig.epochs,
    learning_rate: float = SFTConfig.learning_rate,
    batch_size: int = SFTConfig.batch_size,
    lora: bool = False,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue supervised fine-tuning on the project's demonstrations (a new ``sft`` snapshot unless one is
    given), starting from ``parent`` (a policy of the project) or else from ``base_model``."""
    if parent is not None:
        parent = own_model(project, parent, ModelVersion.Kind.POLICY)
    require_positive(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size)
    snapshot = snapshot_for(project, snapshot, DatasetSnapshot.Kind.SFT, created_by)
    return run_create(
        project=project, kind=TrainingRun.Kind.SFT, snapshot=snapshot, parent_model=parent,
        base_model=parent.name if parent else base_model, created_by=created_by,
        config={"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "lora": lora},
    )  # fmt: skip


class SFTRunForm(RunForm):
    snapshot = forms.ModelChoiceField(
        queryset=DatasetSnapshot.objects.none(), required=False,
        empty_label="Freeze a new snapshot of the demonstrations now", help_text="The demonstrations to train on.",
    )  # fmt: skip
    parent = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(), required=False, empty_label="Start from the base model below",
        help_text="A policy of this project to fine-tune further.",
    )  # fmt: skip
    base_model = forms.CharField(
        initial=SFTConfig.model, help_text="smollm2-135m-instruct, a Hugging Face id or a local path."
    )
    epochs = forms.FloatField(initial=SFTConfig.epochs, min_value=0.01)
    learning_rate = forms.FloatField(initial=SFTConfig.learning_rate, min_value=1e-8)
    batch_size = forms.IntegerField(initial=SFTConfig.batch_size, min_value=1, help_text="Demonstrations per step.")
    lora = forms.BooleanField(required=False, help_text="Train LoRA adapters (merged into the saved model).")

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, project=project, **kwargs)
        self.snapshots("snapshot", DatasetSnapshot.Kind.SFT)
        self.policy_choices("parent")


SPEC = RunSpec(
    kind=TrainingRun.Kind.SFT,
    command="sft",
    config=SFTConfig,
    start=sft_run_start,
    form=SFTRunForm,
    page=RunPage("run-sft", "Run SFT", "Start fine-tuning", "run_sft", "Run SFT on the project's demonstrations"),
    data_flag="--data",
    options=("epochs", "learning_rate", "batch_size", "max_length", "logging_steps", "lora"),
    register=model_version_register,
    curves=("loss",),
)
