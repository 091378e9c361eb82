"""RLHF Studio's tables, one module per domain, re-exported here: ``content`` (projects, prompts, responses,
comparison tasks, demonstrations, accounts), ``judging`` (assignments, judgements, problem reports), ``runs``
(dataset snapshots, training runs, model versions), ``imports`` (import jobs), ``constitutional``
(constitutions, principles, critique chains), ``quality`` (raters' standing on projects) and ``webhooks``
(subscriptions to a project's events and their deliveries).

Rules that a single row can check are database constraints; rules that need related rows live in
``clean()``. Services call ``full_clean()`` before every write, so both hold for every write path.
"""

from labeling.models.constitutional import Constitution, CritiqueChain, CritiqueRound, Principle, ReviewStatus
from labeling.models.content import (
    ComparisonTask,
    Demonstration,
    Project,
    Prompt,
    Response,
    TaskOrder,
    TaskResponse,
    TaskStatus,
    User,
)
from labeling.models.imports import ImportJob, ImportStatus
from labeling.models.judging import (
    Assignment,
    AssignmentState,
    Flag,
    Judgement,
    JudgementSource,
    ProblemReportOutcome,
    TaskProblemReport,
)
from labeling.models.quality import (
    ProjectAgreement,
    RaterStanding,
    RaterStats,
    ReviewItem,
    ReviewItemStatus,
    RewardCheck,
)
from labeling.models.runs import (
    DatasetSnapshot,
    ModelKind,
    ModelVersion,
    ResponseScore,
    RunKind,
    RunStatus,
    SnapshotFormat,
    SnapshotKind,
    TrainingRun,
)
from labeling.models.webhooks import DeliveryStatus, Webhook, WebhookDelivery, WebhookEvent

__all__ = [
    "ResponseScore",
    "Assignment",
    "AssignmentState",
    "ComparisonTask",
    "Constitution",
    "CritiqueChain",
    "CritiqueRound",
    "DatasetSnapshot",
    "DeliveryStatus",
    "Demonstration",
    "Flag",
    "ImportJob",
    "ImportStatus",
    "Judgement",
    "JudgementSource",
    "ModelKind",
    "ModelVersion",
    "Principle",
    "ProblemReportOutcome",
    "Project",
    "ProjectAgreement",
    "Prompt",
    "RaterStanding",
    "RaterStats",
    "Response",
    "ReviewItem",
    "ReviewItemStatus",
    "RewardCheck",
    "ReviewStatus",
    "RunKind",
    "RunStatus",
    "SnapshotFormat",
    "SnapshotKind",
    "TaskProblemReport",
    "TaskResponse",
    "TaskOrder",
    "TaskStatus",
    "TrainingRun",
    "User",
    "Webhook",
    "WebhookDelivery",
    "WebhookEvent",
]
