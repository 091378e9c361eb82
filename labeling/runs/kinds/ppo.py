"""PPO: the policy tuned against a reward model, with a per-token KL penalty to where it started."""

from pathlib import Path

from django import forms
from django.db import transaction

from labeling.errors import ApplicationError
from labeling.models import DatasetSnapshot, ModelVersion, Project, TrainingRun, User
from labeling.runs.forms import ModelVersionChoiceField, RunForm
from labeling.runs.outcomes import model_version_register
from labeling.runs.spec import RunPage, RunSpec
from labeling.runs.starting import model_path, own_model, require_positive, run_create, snapshot_for
from training.config import PPOConfig


@transaction.atomic
def ppo_run_start(
    *,
    project: Project,
    reward_model: ModelVersion | None = None,
    policy: ModelVersion | None = None,
    base_model: str = PPOConfig.policy,
    snapshot: DatasetSnapshot | None = None,
    kl_coef: float = PPOConfig.kl_coef,
    steps: int = PPOConfig.steps,
    learning_rate: float = PPOConfig.learning_rate,
    batch_size: int = PPOConfig.batch_size,
    ppo_epochs: int = PPOConfig.ppo_epochs,
    max_new_tokens: int = PPOConfig.max_new_tokens,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue PPO of ``policy`` (default: the project's current policy, else ``base_model``) against
    ``reward_model`` (default: the current reward model) on the project's prompts (a new ``prompts``
    snapshot unless one is given)."""
    reward_model = own_model(project, reward_model, ModelVersion.Kind.REWARD)
    if reward_model is None:
        raise ApplicationError("PPO needs a reward model: train one and make it current, or pick one.")
    policy = own_model(project, policy, ModelVersion.Kind.POLICY)
    require_positive(kl_coef=kl_coef, steps=steps, learning_rate=learning_rate, batch_size=batch_size,
                     ppo_epochs=ppo_epochs, max_new_tokens=max_new_tokens)  # fmt: skip
    snapshot = snapshot_for(project, snapshot, DatasetSnapshot.Kind.PROMPTS, created_by)
    config = {"kl_coef": kl_coef, "steps": steps, "learning_rate": learning_rate, "batch_size": batch_size,
              "mini_batch_size": batch_size, "ppo_epochs": ppo_epochs, "max_new_tokens": max_new_tokens}  # fmt: skip
    return run_create(
        project=project, kind=TrainingRun.Kind.PPO, snapshot=snapshot, parent_model=policy,
        reward_model=reward_model, base_model=policy.name if policy else base_model, config=config,
        created_by=created_by,
    )  # fmt: skip


class PPORunForm(RunForm):
    policy = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(), required=False,
        empty_label="The current policy (or the base model below if there is none)",
    )  # fmt: skip
    base_model = forms.CharField(initial=PPOConfig.policy, help_text="Used when the project has no policy yet.")
    reward_model = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(), required=False, empty_label="The current reward model",
        help_text="The project's reward models, newest first.",
    )  # fmt: skip
    snapshot = forms.ModelChoiceField(
        queryset=DatasetSnapshot.objects.none(), required=False, empty_label="Freeze a snapshot of every prompt now",
        help_text="The prompts to sample from.",
    )  # fmt: skip
    kl_coef = forms.FloatField(initial=PPOConfig.kl_coef, min_value=1e-6, label="Beta (KL coefficient)")
    steps = forms.IntegerField(initial=PPOConfig.steps, min_value=1)
    batch_size = forms.IntegerField(initial=PPOConfig.batch_size, min_value=1, help_text="Episodes per PPO iteration.")
    ppo_epochs = forms.IntegerField(
        initial=PPOConfig.ppo_epochs, min_value=1, label="PPO epochs", help_text="Passes over each batch of episodes."
    )
    max_new_tokens = forms.IntegerField(
        initial=PPOConfig.max_new_tokens, min_value=1, label="Response budget (tokens)",
        help_text="A response that has not ended by then is cut off and loses the missing-EOS penalty from its "
        "score; the run page shows how many ended.",
    )  # fmt: skip
    learning_rate = forms.FloatField(initial=PPOConfig.learning_rate, min_value=1e-9)

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, project=project, **kwargs)
        self.policy_choices("policy")
        self.limit(
            "reward_model",
            ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD).order_by("-created_at", "-id"),
        )
        self.snapshots("snapshot", DatasetSnapshot.Kind.PROMPTS)


def _reward_model(run: TrainingRun, out_dir: Path) -> list[str]:
    if run.reward_model is None:
        raise ApplicationError(f"PPO run {run.pk} names no reward model.")
    return ["--reward-model", model_path(run.reward_model)]


SPEC = RunSpec(
    kind=TrainingRun.Kind.PPO,
    command="ppo",
    config=PPOConfig,
    start=ppo_run_start,
    form=PPORunForm,
    page=RunPage("run-ppo", "Run PPO", "Start PPO", "run_ppo", "Run PPO against a reward model"),
    data_flag="--prompts",
    model_flag="--policy",
    options=(
        "steps",
        "batch_size",
        "mini_batch_size",
        "ppo_epochs",
        "learning_rate",
        "kl_coef",
        "max_new_tokens",
        "temperature",
        "save_every",
        "seed",
        "missing_eos",
        "missing_eos_penalty",
        "lora",
    ),  # fmt: skip
    arguments=_reward_model,
    register=model_version_register,
    curves=("score", "kl", "eos_rate", "entropy"),
)
