"""The admin pages, one module per domain: ``projects`` (projects, accounts, imports, exports, starting runs),
``content`` (prompts, responses, tasks, judgements, problem reports, demonstrations), ``runs`` (snapshots,
training runs, model versions), ``constitutional``, ``quality`` (raters' standing) and ``webhooks``
(subscriptions and their deliveries). Importing the package registers them all.

Labels are evidence: judgements, snapshots, training runs and model versions are read-only here, and are
written only by the services that own them.
"""

from labeling.admin import constitutional, content, projects, quality, runs, webhooks

__all__ = ["constitutional", "content", "projects", "quality", "runs", "webhooks"]
