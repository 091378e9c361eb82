"""Celery tasks: thin wrappers that call one service and return what it reports."""

from celery import shared_task

from labeling import services


@shared_task
def assignment_expire_stale_task() -> int:
    """Return abandoned leases to the pool (scheduled every minute by Celery beat)."""
    return services.assignment_expire_stale()
