"""A snapshot as a Hugging Face dataset folder: Parquet shards in the Hub's layout that datasets.load_dataset
reads as they are, holding exactly the snapshot's rows, and a dataset card huggingface_hub parses, with the
licence, the counts, the filter and the sha256."""

import io
import json
import zipfile

import datasets
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from huggingface_hub import DatasetCard

from labeling import hub, services
from labeling.models import DatasetSnapshot
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

RANKINGS = [
    {"prompt": f"Question {i}?", "responses": [f"good {i}", f"fine {i}", f"bad {i}"], "ranking": [[0], [1, 2]]}
    for i in range(7)
]


@pytest.fixture
def project(artefacts):
    project = ProjectFactory(name="Helpful answers", dataset_licence="cc-by-4.0")
    data = "".join(json.dumps(record) + "\n" for record in RANKINGS).encode()
    services.dataset_import_file(project=project, source=io.BytesIO(data), name="rankings.jsonl")
    return project


def snapshot_rows(snapshot: DatasetSnapshot, artefacts) -> list[dict]:
    path = artefacts / snapshot.path
    if snapshot.file_format == "parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("kind", "file_format"), [("ranking", "jsonl"), ("preference", "parquet")])
def test_a_snapshot_becomes_a_folder_load_dataset_reads_with_the_same_rows(
    project, artefacts, tmp_path, kind, file_format
):
    snapshot = services.dataset_snapshot_create(project=project, kind=kind, file_format=file_format)
    folder = tmp_path / "hub"
    written = hub.hub_folder_write(snapshot, folder, shard_rows=3)
    count = -(-snapshot.row_count // 3)
    assert written.shards == [f"data/train-{i:05d}-of-{count:05d}.parquet" for i in range(count)] and count >= 3
    assert sorted(path.name for path in (folder / "data").iterdir()) == [name.split("/")[1] for name in written.shards]

    dataset = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    expected = snapshot_rows(snapshot, artefacts)
    assert dataset.num_rows == snapshot.row_count == len(expected)
    assert [row["prompt"] for row in dataset] == [row["prompt"] for row in expected]
    if kind == "ranking":
        assert [row["ranking"] for row in dataset] == [row["ranking"] for row in expected] == [[[0], [1, 2]]] * 7
        assert [row["responses"] for row in dataset] == [row["responses"] for row in expected]
    else:
        assert [(row["chosen"], row["rejected"]) for row in dataset] == [(r["chosen"], r["rejected"]) for r in expected]


def test_the_card_gives_the_licence_split_counts_filter_and_hash(project, tmp_path):
    snapshot = services.dataset_snapshot_create(project=project, kind="preference")
    hub.hub_folder_write(snapshot, tmp_path / "hub")
    card = DatasetCard.load(tmp_path / "hub" / "README.md")
    assert card.data.license == "cc-by-4.0"
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert snapshot.sha256 in card.text and f"{snapshot.row_count:,} rows" in card.text
    assert '"gold": "include"' in card.text  # the filter
    assert json.dumps(snapshot.counts, indent=2, sort_keys=True) in card.text
    other = services.dataset_snapshot_create(project=project, kind="ranking")
    hub.hub_folder_write(other, tmp_path / "mit", license="mit")
    assert DatasetCard.load(tmp_path / "mit" / "README.md").data.license == "mit"


def test_the_command_writes_the_folder_and_refuses_a_push_without_a_token(project, tmp_path, monkeypatch, capsys):
    snapshot = services.dataset_snapshot_create(project=project, kind="ranking")
    call_command("snapshot_hub", str(snapshot.pk), "--output", str(tmp_path / "out"))
    assert "Wrote 7 rows in 1 shards" in capsys.readouterr().out
    assert datasets.load_dataset(str(tmp_path / "out"), split="train", cache_dir=str(tmp_path / "cache")).num_rows == 7
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(CommandError, match="Set HF_TOKEN"):
        call_command("snapshot_hub", str(snapshot.pk), "--output", str(tmp_path / "push"), "--push", "org/data")
    assert not (tmp_path / "push").exists()
    with pytest.raises(CommandError, match="is not empty"):
        call_command("snapshot_hub", str(snapshot.pk), "--output", str(tmp_path / "out"))
    with pytest.raises(CommandError, match="There is no snapshot 999999"):
        call_command("snapshot_hub", "999999", "--output", str(tmp_path / "none"))


def test_the_admin_gives_the_folder_as_a_zip_that_loads(project, admin_client, client, rater, tmp_path):
    snapshot = services.dataset_snapshot_create(project=project, kind="ranking")
    listing = admin_client.get(reverse("admin:labeling_datasetsnapshot_changelist")).content.decode()
    url = reverse("admin:labeling_datasetsnapshot_hub_dataset", args=[snapshot.pk])
    assert url in listing
    response = admin_client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        archive.extractall(tmp_path)
    folder = tmp_path / f"{project.slug}-ranking-{snapshot.pk}"
    dataset = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    assert dataset.num_rows == 7 and DatasetCard.load(folder / "README.md").data.license == "cc-by-4.0"
    client.force_login(rater)
    assert client.get(url).status_code == 302  # raters are sent to the admin login
