"""The artefact store on a real S3-compatible server (moto's, started as its own process): trees that arrive
whole or not at all, checked downloads, and two workers with nothing in common but the database, the broker and
the store running a project's training between them while the web side serves what they made."""

import hashlib
import os
import uuid
from io import StringIO
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from labeling import artefacts, runs, services
from labeling.errors import ApplicationError
from labeling.models import ModelVersion, TrainingRun
from labeling.runs.outcomes import files_hash
from tests.factories import PromptFactory, ResponseFactory
from tests.labeling.test_training_runs import ranked_project, tiny_base_model
from tests.worker import celery_worker, wait_for_end
from training.store import MANIFEST, Store, StoreError, materialise


def a_model_folder(folder: Path) -> Path:
    (folder / "weights").mkdir(parents=True)
    (folder / "config.json").write_text('{"layers": 2}')
    (folder / "weights" / "model.bin").write_bytes(os.urandom(4096))
    return folder


def test_a_tree_goes_up_checked_and_comes_down_whole_once_per_machine(s3_store, tmp_path):
    folder = a_model_folder(tmp_path / "model")
    manifest = s3_store.put_tree(folder, "runs/sft-1/model")
    assert set(manifest["files"]) == {"config.json", "weights/model.bin"}
    assert s3_store.exists(f"runs/sft-1/model/{MANIFEST}")

    local = Path(materialise(s3_store.url_for("runs/sft-1/model"), tmp_path / "cache"))
    assert local.is_relative_to(tmp_path / "cache")
    assert (local / "weights" / "model.bin").read_bytes() == (folder / "weights" / "model.bin").read_bytes()
    # The same tree again is the same local copy (its name is its manifest's hash), not a second download.
    assert Path(materialise(s3_store.url_for("runs/sft-1/model"), tmp_path / "cache")) == local

    # One file, by the hash its URL carries.
    sha = hashlib.sha256(b'{"layers": 2}').hexdigest()
    copy = materialise(f"{s3_store.url_for('runs/sft-1/model/config.json')}#sha256={sha}", tmp_path / "cache")
    assert Path(copy).read_text() == '{"layers": 2}'


def test_an_altered_or_unfinished_tree_is_refused_and_nothing_is_cached(s3_store, tmp_path):
    folder = a_model_folder(tmp_path / "model")
    s3_store.put_tree(folder, "runs/sft-2/model")
    s3_store.fs.pipe(s3_store.path("runs/sft-2/model/weights/model.bin"), b"not the weights")
    with pytest.raises(StoreError, match="arrived altered"):
        materialise(s3_store.url_for("runs/sft-2/model"), tmp_path / "cache")
    assert not any(path.is_file() for path in (tmp_path / "cache").rglob("*"))

    # Files without their manifest: an upload that stopped half way.
    s3_store.put_file(folder / "config.json", "runs/sft-3/model/config.json")
    with pytest.raises(StoreError, match="no finished folder"):
        materialise(s3_store.url_for("runs/sft-3/model"), tmp_path / "cache")

    # A snapshot whose bytes are not those its hash names.
    s3_store.fs.pipe(s3_store.path("snapshots/p/x.jsonl"), b'{"a": 1}\n')
    with pytest.raises(StoreError, match="arrived altered"):
        materialise(f"{s3_store.url_for('snapshots/p/x.jsonl')}#sha256={'0' * 64}", tmp_path / "cache")

    # Served: the stream ends in an error rather than passing an altered file off as whole.
    stream = s3_store.stream("runs/sft-2/model/weights/model.bin", "0" * 64)
    with pytest.raises(StoreError, match="read altered"):
        b"".join(stream)


def test_a_file_uploaded_in_parts_is_checked_against_the_parts_etag(s3_store, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as out:  # past twice s3fs's part size, so it goes up in parts
        for _ in range(101):
            out.write(os.urandom(1 << 20))
    sha = s3_store.put_file(big, "runs/x/big.bin")
    etag = s3_store.fs.info(s3_store.path("runs/x/big.bin"))["ETag"]
    assert etag.strip('"').endswith("-3")
    assert sha == hashlib.sha256(big.read_bytes()).hexdigest()


def test_the_local_store_is_a_folder_and_gains_manifests_in_place(tmp_path):
    store = Store(tmp_path / "artefacts")
    folder = a_model_folder(tmp_path / "artefacts" / "runs" / "sft-4" / "model")
    store.put_tree(folder, "runs/sft-4/model")
    assert (folder / MANIFEST).exists() and store.url_for("runs/sft-4/model") == str(folder)
    assert materialise(store.url_for("runs/sft-4/model"), tmp_path / "cache") == str(folder)  # no copy


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_two_workers_that_share_only_the_store_train_and_score_and_the_web_serves_the_model(
    s3_store, settings, staff, tmp_path
):
    """The web process (this one) freezes the snapshot; worker one, with folders of its own, trains on it; worker
    two, with others, scores responses with the model worker one made; the web side serves that model's files.
    Each reads from the store alone what another wrote."""
    project = ranked_project()
    base = tiny_base_model(tmp_path / "hub" / "tiny")  # a base model as from the hub, not from a worker's folder
    one, two = tmp_path / "one", tmp_path / "two"
    with celery_worker(tmp_path, VAR_DIR=one, ARTEFACTS_DIR=one / "artefacts", WORK_DIR=one / "work",
                       MODEL_CACHE_DIR=one / "cache") as worker:  # fmt: skip
        settings.CELERY_TRAINING_QUEUE = worker.queue
        start = runs.reward_run_start(project=project, base_model=base, epochs=4, learning_rate=0.003, created_by=staff)
        snapshot = start.snapshot
        assert s3_store.exists(snapshot.path) and not (settings.ARTEFACTS_DIR / snapshot.path).exists()
        trained = wait_for_end(start, worker)
    assert trained.status == "succeeded", f"{trained.error}\n{trained.log_tail}"
    version = ModelVersion.objects.get(training_run=trained)
    assert version.metrics["eval_accuracy"] >= 0.9  # it learned the known order from the snapshot it fetched
    assert version.artefact_path == f"{trained.output_dir}/model"
    assert s3_store.manifest(version.artefact_path)["files"]
    assert {"log.txt", "metrics.jsonl", "result.json"} <= set(s3_store.manifest(trained.output_dir)["files"])
    assert not (one / "work" / trained.output_dir).exists()  # the worker's disk freed once the store held it
    assert any((one / "cache" / "store").rglob(Path(snapshot.path).name))  # fetched and checked there

    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": "question 99"}])
    fresh = [ResponseFactory(prompt=prompt, text=text) for text in ("good good 99", "bad bad 99")]
    services.comparison_task_create(project=project, prompt=prompt, responses=fresh)  # an open task to score
    with celery_worker(tmp_path, VAR_DIR=two, ARTEFACTS_DIR=two / "artefacts", WORK_DIR=two / "work",
                       MODEL_CACHE_DIR=two / "cache") as worker:  # fmt: skip
        settings.CELERY_TRAINING_QUEUE = worker.queue
        start = runs.scoring_run_start(project=project, reward_model=version, scope="open", created_by=staff)
        scored = wait_for_end(start, worker)
    assert scored.status == "succeeded", f"{scored.error}\n{scored.log_tail}"
    assert scored.metrics["scores_stored"] == 2
    fetched = next((two / "cache" / "store").glob("*/model"))  # the model, fetched by worker two from the store
    (fetched / MANIFEST).unlink()
    assert files_hash(fetched) == version.content_hash

    client = APIClient()
    client.force_authenticate(staff)
    listing = client.get(f"/api/v1/models/{version.pk}/files")
    assert listing.status_code == 200, listing.content
    served = tmp_path / "served"
    for entry in listing.json()["files"]:
        response = client.get(entry["url"])
        assert response.status_code == 200 and response["X-Content-SHA256"] == entry["sha256"]
        target = served / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"".join(response.streaming_content))
    assert files_hash(served) == version.content_hash
    assert client.get(f"/api/v1/models/{version.pk}/files/../../secrets").status_code == 404
    download = client.get(f"/api/v1/snapshots/{snapshot.pk}/download")
    assert hashlib.sha256(b"".join(download.streaming_content)).hexdigest() == snapshot.sha256


@pytest.mark.django_db
def test_model_files_are_for_staff_only(rater_api, project):
    version = ModelVersion.objects.create(
        project=project, kind="reward", name="rm", artefact_path="runs/reward-9/model"
    )
    assert rater_api.get(f"/api/v1/models/{version.pk}/files").status_code == 403


@pytest.mark.django_db
def test_a_run_whose_outputs_cannot_be_stored_fails_and_registers_nothing(s3_store, settings, staff, monkeypatch):
    """The upload breaks half way through the model: the run fails with the reason, no version is registered,
    and the store holds no manifest for the half-stored model."""
    from labeling.runs import execution

    project = ranked_project(judgements=4)
    run = TrainingRun.objects.create(project=project, kind="reward", status="running", base_model="m")
    run.output_dir = artefacts.run_key(run)
    out_dir = artefacts.run_folder(run)
    a_model_folder(out_dir / "model")
    calls = []

    def flaky_put_file(self, source, key):
        calls.append(key)
        if len(calls) == 2:
            raise OSError("connection reset by peer")
        return original(self, source, key)

    original = Store.put_file
    monkeypatch.setattr(Store, "put_file", flaky_put_file)
    with pytest.raises(ApplicationError, match="could not be stored.*connection reset"):
        execution.outputs_keep(run, out_dir, succeeded=True)
    assert not s3_store.exists(f"{run.output_dir}/model/{MANIFEST}")
    with pytest.raises(StoreError):
        s3_store.manifest(f"{run.output_dir}/model")


def test_artefacts_check_makes_the_bucket_and_names_a_store_it_cannot_use(s3_store, settings):
    from django.core.management import CommandError, call_command

    settings.ARTEFACTS_URL = f"s3://fresh-{uuid.uuid4().hex[:12]}/studio"
    out = StringIO()
    call_command("artefacts_check", stdout=out)
    assert "writable" in out.getvalue() and artefacts.store().fs.exists(settings.ARTEFACTS_URL.split("/")[2])
    settings.ARTEFACTS_URL = "s3://Not_A_Bucket_Name!/studio"
    with pytest.raises(CommandError, match="does not answer"):
        call_command("artefacts_check")
