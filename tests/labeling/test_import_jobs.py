"""Imports as jobs: the upload is stored and answered with 202, a worker imports it streaming in batches inside
one transaction, the job reports progress while it runs, and a job whose worker died is marked failed."""

import io
import json
import os
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from labeling import services
from labeling.errors import ApplicationError
from labeling.models import ComparisonTask, Demonstration, ImportJob, Judgement, Prompt
from labeling.services import import_jobs, imports
from tests.factories import ProjectFactory
from tests.worker import celery_worker


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


# Duplicates that lie far apart: with batches of two records they fall in different batches.
PAIRS = [
    {"prompt": "Q1", "chosen": "a1", "rejected": "b1"},
    {"prompt": "Q2", "chosen": "a2", "rejected": "b2"},
    {"prompt": "Q3", "chosen": "a3", "rejected": "b3"},
    {"prompt": "Q4", "chosen": "a4", "rejected": "b4"},
    {"prompt": "Q1", "chosen": "a1", "rejected": "b1"},  # the same pair again: nothing new
    {"prompt": "Q2", "chosen": "c2", "rejected": "b2"},  # a known prompt and response, and a new response
    {"prompt": "Q5", "chosen": "a5", "rejected": "b5"},
]
DEMONSTRATIONS = [{"prompt": "Q1", "completion": "d1"}, {"prompt": "Q9", "completion": "d9"}] * 2


def import_file(project, records: list[dict]) -> dict:
    name = f"{project.slug}.jsonl"  # the origin of its judgements, whose keys are unique per origin
    return services.dataset_import_file(project=project, source=io.BytesIO(jsonl(records)), name=name).as_dict()


def stored(project) -> dict:
    return {
        "prompts": sorted(str(messages) for messages in Prompt.objects.filter(project=project).values_list("messages")),
        "tasks": sorted(
            sorted(task.responses.values_list("text", flat=True))
            for task in ComparisonTask.objects.filter(project=project)
        ),
        "judgements": Judgement.objects.filter(task__project=project).count(),
        "demonstrations": sorted(Demonstration.objects.filter(prompt__project=project).values_list("text", flat=True)),
    }


@pytest.mark.django_db
def test_batches_catch_the_duplicates_of_earlier_batches(project, monkeypatch):
    whole = import_file(project, PAIRS)
    assert whole["created"] == {"prompts": 5, "responses": 11, "tasks": 6, "judgements": 6}
    assert whole["skipped"] == {"prompts": 2, "responses": 3, "tasks": 1, "judgements": 1}
    whole_demonstrations = import_file(project, DEMONSTRATIONS)

    other = ProjectFactory()
    monkeypatch.setattr(imports, "IMPORT_BATCH", 2)
    assert import_file(other, PAIRS) == whole
    assert import_file(other, DEMONSTRATIONS) == whole_demonstrations
    assert whole_demonstrations["created"]["demonstrations"] == 2 and whole_demonstrations["skipped"] == {
        "prompts": 3, "demonstrations": 2,
    }  # fmt: skip
    assert stored(other) == stored(project)


@pytest.mark.django_db
def test_a_bad_record_in_a_late_batch_leaves_nothing_of_the_early_ones(project, monkeypatch):
    monkeypatch.setattr(imports, "IMPORT_BATCH", 2)
    with pytest.raises(ApplicationError) as error:
        import_file(project, [*PAIRS, {"prompt": "Q6", "chosen": "a6"}])
    assert error.value.extra == {"line": 8, "field": "rejected"}
    assert not Prompt.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_a_job_asked_to_skip_invalid_records_imports_the_rest_and_lists_them_by_line(api_import, project, monkeypatch):
    monkeypatch.setattr(imports, "IMPORT_BATCH", 2)
    empty_reply = {"prompt": "Q7", "chosen": " ", "rejected": "b7"}  # as in HH-RLHF, where a few replies are empty
    records = [*PAIRS, empty_reply, {"prompt": "Q6", "chosen": "a6"}]
    failed = api_import(project, jsonl(records), "pairs.jsonl")
    assert (failed["status"], failed["error_line"], failed["error_field"]) == ("failed", 8, "chosen")
    assert not Prompt.objects.filter(project=project).exists()

    job = api_import(project, jsonl(records), "pairs.jsonl", skip_invalid="true")
    assert job["status"] == "succeeded" and job["skip_invalid"] is True
    assert job["records"] == 7 and job["created"]["judgements"] == 6
    assert job["skipped"]["invalid records"] == 2
    assert [(record["line"], record["field"]) for record in job["invalid"]] == [(8, "chosen"), (9, "rejected")]
    assert job["invalid"][0]["message"] == "Line 8, field 'chosen': the reply is empty."
    assert not Prompt.objects.filter(project=project, messages__0__content="Q7").exists()


@pytest.mark.django_db
def test_a_preference_prompt_written_as_an_hh_transcript_is_imported_turn_by_turn(api_import, project):
    transcript = (
        "\n\nHuman: Can owls see in daylight?\n\nAssistant: Yes, quite well.\n\nHuman: And at night?\n\nAssistant:"
    )
    job = api_import(project, jsonl([{"prompt": transcript, "chosen": " Better still.", "rejected": " No."}]))
    assert job["status"] == "succeeded", job
    assert Prompt.objects.get(project=project).messages == [
        {"role": "user", "content": "Can owls see in daylight?"},
        {"role": "assistant", "content": "Yes, quite well."},
        {"role": "user", "content": "And at night?"},
    ]


@pytest.mark.django_db
def test_a_job_reports_progress_while_it_runs_and_runs_once(staff_api, project, artefacts, monkeypatch):
    seen: list[dict] = []
    real_import = import_jobs.dataset_import_file

    def watching(**options):
        def progress(records: int) -> None:
            options["progress"](records)
            seen.append(staff_api.get(f"/api/v1/imports/{job.pk}").json())

        return real_import(**{**options, "progress": progress})

    monkeypatch.setattr(import_jobs, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(import_jobs, "dataset_import_file", watching)
    monkeypatch.setattr(imports, "IMPORT_BATCH", 2)
    upload = SimpleUploadedFile("pairs.jsonl", jsonl(PAIRS))
    job = services.import_job_create(project=project, upload=upload)
    assert services.import_job_execute(job.pk) == "succeeded"
    assert [view["status"] for view in seen] == ["running"] * 4
    assert [view["progress"]["records"] for view in seen] == [2, 4, 6, 7]
    fractions = [view["progress"]["fraction"] for view in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert staff_api.get(f"/api/v1/imports/{job.pk}").json()["progress"] is None
    # A second delivery of the same task finds the job done and imports nothing again.
    assert services.import_job_execute(job.pk) == "succeeded"
    assert Judgement.objects.filter(task__project=project).count() == 6


@pytest.mark.django_db
def test_imports_whose_worker_died_are_marked_failed(project, artefacts):
    def running(worker: str, idle_s: float) -> ImportJob:
        upload = SimpleUploadedFile("pairs.jsonl", jsonl(PAIRS))
        job = services.import_job_create(project=project, upload=upload)
        ImportJob.objects.filter(pk=job.pk).update(status="running", worker=worker, started_at=timezone.now())
        progress = import_jobs.job_folder(job) / import_jobs.PROGRESS_FILE
        progress.write_text('{"records": 0, "bytes_read": 0, "fraction": 0.0}', encoding="utf-8")
        os.utime(progress, (time.time() - idle_s, time.time() - idle_s))
        return job

    silent, alive, restarted = running("a@h", 600), running("b@h", 1), running("c@h", 1)
    assert services.import_jobs_fail_stale() == 1
    assert services.import_jobs_fail_stale(worker="c@h") == 1
    statuses = dict(ImportJob.objects.values_list("pk", "status"))
    assert (statuses[silent.pk], statuses[alive.pk], statuses[restarted.pk]) == ("failed", "running", "failed")
    assert ImportJob.objects.get(pk=silent.pk).error == import_jobs.STOPPED
    assert not import_jobs.job_folder(silent).exists() and import_jobs.job_folder(alive).exists()


def test_the_stale_import_check_is_scheduled_every_minute(db):
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="labeling.tasks.import_jobs_fail_stale_task")
    assert (task.interval.every, task.interval.period, task.enabled) == (60, "seconds", True)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_an_upload_is_imported_by_a_worker_process_and_polled_to_its_end(staff, project, artefacts, settings, tmp_path):
    api = APIClient()
    api.force_authenticate(staff)
    with celery_worker(tmp_path) as worker:
        settings.CELERY_TASK_DEFAULT_QUEUE = worker.queue
        upload = SimpleUploadedFile("pairs.jsonl", jsonl(PAIRS))
        response = api.post(f"/api/v1/projects/{project.slug}/imports", {"file": upload}, format="multipart")
        assert response.status_code == 202, response.content
        deadline = time.monotonic() + 60
        job = response.json()
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = api.get(response["Location"]).json()
        assert job["status"] == "succeeded", worker.log()
    assert job["created"] == {"prompts": 5, "responses": 11, "tasks": 6, "judgements": 6}
    assert ImportJob.objects.get().worker.startswith(worker.queue)
