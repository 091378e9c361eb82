"""A snapshot as a Hugging Face dataset folder, as the Hub lays one out: ``data/train-0000i-of-0000n.parquet``
shards and a dataset card (``README.md``) whose YAML header names them, with the licence, and whose text gives
the counts, the filter and the snapshot's sha256. ``datasets.load_dataset(folder)`` reads the folder as it is;
``hub_push`` uploads it with huggingface_hub when a token is configured.

The rows are the snapshot's own, read back from the store (its sha256 checked), never exported again: the
folder holds exactly what the frozen file holds, in the Parquet schema of the product's own exports."""

import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from labeling import artefacts, exporters
from labeling.errors import ApplicationError
from labeling.models import DatasetSnapshot

SHARD_ROWS = 100_000
DATA_DIR = "data"
KIND_NOTES = {
    "preference": "Pairs in TRL's preference layout: `prompt`, `chosen`, `rejected` (and `margin` when the raters "
    "gave one). A K-wise ranking gives every ordered pair of responses in different groups.",
    "ranking": "One row per judgement: the prompt, its responses, and `ranking`, groups of positions in "
    "`responses`, best first (a group of several is a tie), with Likert scores, flags, rater, source and weight.",
    "consensus": "One row per task: the reviewer's ranking, or the judgements' rankings merged by ranked pairs.",
    "sft": "Demonstrations written by raters, as `prompt` and `completion` (or `messages`).",
    "hh": "Anthropic HH-RLHF transcripts: `chosen` and `rejected` conversations as text.",
    "prompts": "Every prompt of the project, with its id and its conversation turn by turn.",
}


@dataclass
class HubFolder:
    folder: Path
    shards: list[str]
    rows: int


def _snapshot_file(snapshot: DatasetSnapshot, scratch: Path) -> Path:
    """The snapshot's file on this machine, its sha256 checked (fetched from a remote store into ``scratch``)."""
    store = artefacts.store()
    if store.is_local:
        local = store.local_path(snapshot.path)
        if not local.exists():
            raise ApplicationError(f"The file of snapshot {snapshot.pk} is missing from the artefact store.")
        return local
    return store.get_file(snapshot.path, scratch / Path(snapshot.path).name, snapshot.sha256)


def _tables(snapshot: DatasetSnapshot, path: Path) -> Iterator:
    """The snapshot's rows as Arrow tables in the product's Parquet schema for its kind."""
    import pyarrow.parquet as pq

    if snapshot.file_format == "parquet":
        parquet = pq.ParquetFile(path)
        yield from parquet.iter_batches(batch_size=exporters.BLOCK)
        return
    conversational = bool((snapshot.filters or {}).get("conversational"))
    schema = exporters.parquet_schema(snapshot.kind, conversational)
    with open(path, "rb") as lines:
        records = (orjson.loads(line) for line in lines if line.strip())
        yield from exporters.record_tables(records, schema)


def hub_folder_write(
    snapshot: DatasetSnapshot, folder: Path, *, license: str = "", shard_rows: int = SHARD_ROWS
) -> HubFolder:
    """Write ``snapshot`` into ``folder`` (made; it must be empty or new) as a Hub dataset folder."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ApplicationError(f"{folder} is not empty: a dataset folder is written into a new or empty folder.")
    count = max(1, math.ceil(snapshot.row_count / shard_rows))
    names = [f"{DATA_DIR}/train-{index:05d}-of-{count:05d}.parquet" for index in range(count)]
    (folder / DATA_DIR).mkdir()
    conversational = bool((snapshot.filters or {}).get("conversational"))
    shard, writer, in_shard, rows = 0, None, 0, 0
    with tempfile.TemporaryDirectory() as scratch:
        for table in _tables(snapshot, _snapshot_file(snapshot, Path(scratch))):
            while table.num_rows:
                if writer is None:
                    if shard == count:
                        raise ApplicationError(
                            f"Snapshot {snapshot.pk} holds more rows than it counted ({snapshot.row_count})."
                        )
                    writer = pq.ParquetWriter(folder / names[shard], table.schema, compression="zstd")
                part, table = table.slice(0, shard_rows - in_shard), table.slice(shard_rows - in_shard)
                writer.write(part)
                in_shard, rows = in_shard + part.num_rows, rows + part.num_rows
                if in_shard == shard_rows:
                    writer.close()
                    shard, writer, in_shard = shard + 1, None, 0
    if writer is not None:
        writer.close()
        shard += 1
    for name in names[shard:]:  # an empty snapshot still has its one shard, with no rows
        pq.ParquetWriter(folder / name, exporters.parquet_schema(snapshot.kind, conversational)).close()
    if rows != snapshot.row_count:
        raise ApplicationError(f"Snapshot {snapshot.pk} holds {rows} rows, not the {snapshot.row_count} it counted.")
    (folder / "README.md").write_text(dataset_card(snapshot, license=license), encoding="utf-8")
    return HubFolder(folder=folder, shards=names, rows=rows)


def dataset_card(snapshot: DatasetSnapshot, *, license: str = "") -> str:
    """The dataset card: the Hub's YAML header (licence, the train split's files and size), then what the rows
    are, their counts, the filter that chose them and the sha256 of the snapshot file."""
    from huggingface_hub import DatasetCard, DatasetCardData

    project = snapshot.project
    size = next(
        (name for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                                  (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")) if snapshot.row_count < limit),
        "n>10M",
    )  # fmt: skip
    data = DatasetCardData(
        license=license or project.dataset_licence or "other",
        pretty_name=f"{project.name}: {snapshot.get_kind_display().lower()} snapshot {snapshot.pk}",
        size_categories=[size],
        tags=["rlhf", "human-feedback", "rlhf-studio"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": f"{DATA_DIR}/train-*"}]}],
    )
    counts = json.dumps(snapshot.counts or {}, indent=2, sort_keys=True)
    filters = json.dumps(snapshot.filters or {}, indent=2, sort_keys=True)
    body = f"""
# {data.pretty_name}

Exported by RLHF Studio from the project **{project.name}** (`{project.slug}`) on
{snapshot.created_at:%Y-%m-%d %H:%M} UTC: a `{snapshot.kind}` snapshot of **{snapshot.row_count:,} rows**, frozen as
`{Path(snapshot.path).name}` with sha256 `{snapshot.sha256}`.

{KIND_NOTES.get(snapshot.kind, "")}

## Load it

```python
from datasets import load_dataset

dataset = load_dataset("path/to/this/folder", split="train")  # or the Hub repository's id
```

## Counts

```json
{counts}
```

## Filter

The judgements, prompts or demonstrations this snapshot chose:

```json
{filters}
```

## Provenance

- Snapshot: {snapshot.pk}, file `{snapshot.path}`, sha256 `{snapshot.sha256}`
- Code version: `{snapshot.code_version or "unknown"}`
- Licence: `{data.license}` (the project's data licence, set on the project in RLHF Studio)
"""
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def hub_push(folder: Path, repo_id: str, *, token: str, private: bool = True, message: str = "") -> str:
    """Upload a dataset folder to the Hub as the dataset repository ``repo_id`` (made if missing, private
    unless told otherwise); returns the commit's URL."""
    from huggingface_hub import HfApi

    if not token:
        raise ApplicationError("Set HF_TOKEN (a Hugging Face token with write access) to push a dataset.")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="dataset", commit_message=message or "RLHF Studio snapshot"
    )
    return str(commit.commit_url)
