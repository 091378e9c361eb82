"""RLHF Studio's API from Python: ``Client`` (projects, imports, exports, snapshots, runs, models, leaderboard;
pagination followed, errors raised as ``StudioError``) and the ``studio`` command built on it."""

from studio_client.client import Client, Project, Run, Snapshot, StudioError, Version

__all__ = ["Client", "Project", "Run", "Snapshot", "StudioError", "Version"]
