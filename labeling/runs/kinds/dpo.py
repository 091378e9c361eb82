"""DPO: a policy tuned on the project's preference pairs directly, against the starting policy as reference."""

from django import forms
from django.db import transaction

from labeling.models import DatasetSnapshot, ModelVersion, Project, TrainingRun, User
from labeling.runs.forms import ModelVersionChoiceField, RunForm
from labeling.runs.outcomes import model_version_register
from labeling.runs.spec import RunPage, RunSpec
from labeling.runs.starting import own_model, require_positive, run_create, snapshot_for
from training.config import DPOConfig


@transaction.atomic
def dpo_run_start(
    *,
    project: Project,
    snapshot: DatasetSnapshot | None = None,
    base_model: str = DPOConfig.model,
    parent: ModelVersion | None = None,
    epochs: float = DPOConfig.epochs,
    learning_rate: float = DPOConfig.learning_rate,
    batch_size: int = DPOConfig.batch_size,
    beta: float = DPOConfig.beta,
    loss_type: str = DPOConfig.loss_type,
    lora: bool = False,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue DPO on the project's preference pairs (a new ``preference`` snapshot unless one is given), starting
    from ``parent`` (a policy of the project), else the project's current policy, else ``base_model``; the
    starting policy is the reference. The result is registered as a policy version with that lineage."""
    parent = own_model(project, parent, ModelVersion.Kind.POLICY)
    require_positive(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, beta=beta)
    DPOConfig(loss_type=loss_type)  # type: ignore[arg-type]  # checked by the config, as the trainer will
    snapshot = snapshot_for(project, snapshot, DatasetSnapshot.Kind.PREFERENCE, created_by)
    return run_create(
        project=project, kind=TrainingRun.Kind.DPO, snapshot=snapshot, parent_model=parent,
        base_model=parent.name if parent else base_model, created_by=created_by,
        config={"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "beta": beta,
                "loss_type": loss_type, "lora": lora},
    )  # fmt: skip


class DPORunForm(RunForm):
    snapshot = forms.ModelChoiceField(
        queryset=DatasetSnapshot.objects.none(), required=False,
        empty_label="Freeze a new snapshot of the preference pairs now", help_text="The pairs to learn from.",
    )  # fmt: skip
    parent = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(), required=False,
        empty_label="The project's current policy, or else the base model below",
        help_text="The policy to start from; it is also the reference the policy is kept close to.",
    )  # fmt: skip
    base_model = forms.CharField(
        initial=DPOConfig.model, help_text="smollm2-135m-instruct, a Hugging Face id or a local path."
    )
    epochs = forms.FloatField(initial=DPOConfig.epochs, min_value=0.01)
    learning_rate = forms.FloatField(initial=DPOConfig.learning_rate, min_value=1e-9)
    batch_size = forms.IntegerField(initial=DPOConfig.batch_size, min_value=1, help_text="Pairs per step.")
    beta = forms.FloatField(
        initial=DPOConfig.beta,
        min_value=1e-4,
        help_text="How close to the reference the policy stays (higher: closer).",
    )
    loss_type = forms.ChoiceField(
        choices=[("sigmoid", "sigmoid (DPO)"), ("ipo", "IPO"), ("hinge", "hinge (SLiC)")], initial=DPOConfig.loss_type
    )
    lora = forms.BooleanField(required=False, help_text="Train LoRA adapters (merged into the saved model).")

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, project=project, **kwargs)
        self.snapshots("snapshot", DatasetSnapshot.Kind.PREFERENCE)
        self.policy_choices("parent")


SPEC = RunSpec(
    kind=TrainingRun.Kind.DPO,
    command="dpo",
    config=DPOConfig,
    start=dpo_run_start,
    form=DPORunForm,
    page=RunPage("run-dpo", "Run DPO", "Start DPO", "run_dpo", "Run DPO on the project's preference pairs"),
    data_flag="--data",
    options=("epochs", "learning_rate", "batch_size", "beta", "loss_type", "max_length", "logging_steps", "lora"),
    register=model_version_register,
    curves=("loss", "margin"),
)
