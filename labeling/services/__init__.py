"""Every write the product makes, one module per domain. Each service takes keyword arguments, validates with
``full_clean()``, runs in one transaction, and raises :class:`ApplicationError` for anything it refuses.

- ``content``: projects, prompts, responses, comparison tasks, judgements and demonstrations as given; accounts.
- ``assignment``: the rater's loop (lease, submit, skip, problem reports, demonstrations), safe under concurrency.
- ``imports``: parsed files written all or nothing, many rows per statement, a batch at a time.
- ``import_jobs``: uploads stored and imported by a worker, with progress and the error's line.
- ``snapshots``: exports frozen as files with their hash and counts.
- ``constitutions``: constitutions and the review of critique chains.
- ``quality``: raters' standing: gold tasks first, the gold rule that pauses a rater, reinstatement.
- ``reviews``: the review queue of tasks whose judgements disagree, and reviewers' decisions.
- ``evaluation``: eval prompts, evaluation runs' blinded tasks, the over-optimisation check.
- ``webhooks``: a project's events sent, signed, to the URLs that subscribe to them, with retries.
- ``routing``: where each open task stands in the project's task order, from reward-model scores.
- ``demo``: the demo project.

Call sites use the package: ``services.judgement_submit(...)``.
"""

from labeling.services.assignment import (
    assignment_expire_stale,
    assignment_lease_next,
    assignment_skip,
    demonstration_submit,
    judgement_submit,
)
from labeling.services.constitutions import (
    constitution_default_ensure,
    constitution_import,
    constitution_make_default,
    critique_chain_review,
)
from labeling.services.content import (
    comparison_task_create,
    comparison_task_update,
    demonstration_create,
    judgement_create,
    project_create,
    project_update,
    prompt_create,
    prompt_save,
    rater_ensure,
    response_create,
    response_save,
    stored_html_fill,
    task_status_refresh,
    task_statuses_refresh,
)
from labeling.services.demo import DemoLoadResult, demo_project_ensure
from labeling.services.evaluation import (
    EvalSplit,
    EvaluationTasks,
    eval_prompts_split,
    evaluation_tasks_create,
    overoptimisation_tasks_create,
    prompts_eval_set,
)
from labeling.services.import_jobs import (
    declared_size,
    import_job_create,
    import_job_execute,
    import_job_progress,
    import_job_url,
    import_jobs_fail_stale,
    upload_size_check,
)
from labeling.services.imports import ImportResult, dataset_import, dataset_import_file
from labeling.services.quality import (
    GoldRecord,
    RaterPaused,
    gold_record,
    gold_rule_apply,
    rater_pause,
    rater_reinstate,
    rater_stats_refresh,
    rater_stats_refresh_due,
)
from labeling.services.reports import (
    task_problem_report_create,
    task_problem_report_dismiss,
    task_problem_report_resolve,
)
from labeling.services.reviews import review_decide, review_queue_refresh, review_reason, review_send_back
from labeling.services.routing import (
    model_in_loop_refresh_later,
    task_priorities,
    task_priorities_refresh,
)
from labeling.services.snapshots import dataset_snapshot_create
from labeling.services.webhooks import (
    webhook_create,
    webhook_delivery_attempt,
    webhook_delivery_resend,
    webhook_event_emit,
    webhooks_tick,
)

__all__ = [
    "model_in_loop_refresh_later",
    "task_priorities",
    "task_priorities_refresh",
    "DemoLoadResult",
    "EvalSplit",
    "EvaluationTasks",
    "GoldRecord",
    "ImportResult",
    "RaterPaused",
    "assignment_expire_stale",
    "assignment_lease_next",
    "assignment_skip",
    "comparison_task_create",
    "comparison_task_update",
    "constitution_default_ensure",
    "constitution_import",
    "constitution_make_default",
    "critique_chain_review",
    "dataset_import",
    "dataset_import_file",
    "dataset_snapshot_create",
    "gold_record",
    "gold_rule_apply",
    "demo_project_ensure",
    "eval_prompts_split",
    "evaluation_tasks_create",
    "overoptimisation_tasks_create",
    "demonstration_create",
    "demonstration_submit",
    "declared_size",
    "import_job_create",
    "import_job_execute",
    "import_job_url",
    "import_job_progress",
    "import_jobs_fail_stale",
    "judgement_create",
    "judgement_submit",
    "project_create",
    "project_update",
    "prompt_create",
    "prompt_save",
    "prompts_eval_set",
    "rater_pause",
    "rater_reinstate",
    "rater_stats_refresh",
    "rater_stats_refresh_due",
    "rater_ensure",
    "response_create",
    "response_save",
    "review_decide",
    "review_queue_refresh",
    "review_reason",
    "review_send_back",
    "stored_html_fill",
    "task_problem_report_create",
    "task_problem_report_dismiss",
    "task_problem_report_resolve",
    "task_status_refresh",
    "task_statuses_refresh",
    "upload_size_check",
    "webhook_create",
    "webhook_delivery_attempt",
    "webhook_delivery_resend",
    "webhook_event_emit",
    "webhooks_tick",
]
