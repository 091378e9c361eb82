"""The Celery app. Workers: ``celery -A config worker -Q default`` (web-side jobs) and
``celery -A config worker -Q training`` (GPU work); ``make run`` starts one worker on both."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("rlhf_studio")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
