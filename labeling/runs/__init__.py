"""Runs of the trainer and of the jobs that use models (generation, critique, AI feedback), one spec per kind.

- ``spec``: ``RunSpec``, what a kind declares; ``spec_for`` and ``all_specs`` find the kinds in ``kinds/``.
- ``kinds/``: one module per kind: its start service, its admin form, its inputs, its registration, its spec.
- ``starting``: what every start service shares (checks, queuing on the training workers).
- ``execution``: the trainer subprocess, progress, Cancel, and the kind's registration at the end.
- ``outcomes``: how a run ends (the model version it made and whether it became current, or why it stopped).
- ``logs``: logs as people read them, and the failure sentence.
- ``lifecycle``: cancelling, orphaned runs, scheduled retraining.

Adding a kind: a module in ``kinds/`` with its ``SPEC``, its value in ``TrainingRun.Kind`` (and the migration
``makemigrations`` writes for it), and its command in ``training/``.
"""

from labeling.runs.execution import (
    config_options,
    launch_command,
    record_progress,
    seconds_left,
    trainer_command,
    training_run_execute,
)
from labeling.runs.kinds.ai_feedback import ai_feedback_run_start
from labeling.runs.kinds.critique import critique_run_start
from labeling.runs.kinds.dpo import dpo_run_start
from labeling.runs.kinds.evaluate import evaluation_run_start
from labeling.runs.kinds.generate import generate_run_start
from labeling.runs.kinds.ppo import ppo_run_start
from labeling.runs.kinds.reward import after_reward_model, reward_run_start
from labeling.runs.kinds.score import open_responses_scoring_next, scoring_run_start
from labeling.runs.kinds.sft import sft_run_start
from labeling.runs.lifecycle import (
    ACTIVE,
    project_retraining_schedule,
    reward_retrain_check,
    training_run_cancel,
    training_runs_fail_orphaned,
)
from labeling.runs.logs import clean_log, failure_message, log_tail
from labeling.runs.outcomes import model_version_make_current, model_version_register
from labeling.runs.spec import RunSpec, all_specs, spec_for

__all__ = [
    "open_responses_scoring_next",
    "ACTIVE",
    "RunSpec",
    "after_reward_model",
    "ai_feedback_run_start",
    "all_specs",
    "clean_log",
    "config_options",
    "critique_run_start",
    "evaluation_run_start",
    "failure_message",
    "generate_run_start",
    "launch_command",
    "log_tail",
    "model_version_make_current",
    "model_version_register",
    "dpo_run_start",
    "ppo_run_start",
    "project_retraining_schedule",
    "record_progress",
    "seconds_left",
    "reward_retrain_check",
    "reward_run_start",
    "scoring_run_start",
    "sft_run_start",
    "spec_for",
    "trainer_command",
    "training_run_cancel",
    "training_run_execute",
    "training_runs_fail_orphaned",
]
