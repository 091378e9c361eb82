"""Data in and out: every format round-trips, bad records are named by line and leave nothing behind,
duplicates are skipped, and exports are what TRL and `datasets` read as they are."""

import csv
import gc
import hashlib
import io
import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from labeling import exporters, selectors, services
from labeling.errors import ApplicationError
from labeling.models import ComparisonTask, DatasetSnapshot, Demonstration, Judgement, Prompt, Response
from tests.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def import_bytes(project, data: bytes, name: str, **options):
    return services.dataset_import_file(project=project, source=io.BytesIO(data), name=name, **options)


def export(project, kind: str, *, conversational: bool = False, file_format: str = "jsonl", **filters) -> list[dict]:
    stream = io.BytesIO()
    selection = selectors.ExportFilter(project_id=project.pk, **filters)
    exporters.write_export(kind, file_format, selection, stream, conversational=conversational)
    if file_format == "parquet":
        stream.seek(0)
        return pq.read_table(stream).to_pylist()
    return [json.loads(line) for line in stream.getvalue().decode().splitlines()]


PREFERENCE = [
    {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "margin": 2.0},
    {"prompt": "Name a prime number.", "chosen": "7", "rejected": "8", "margin": 1.0},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Go away.", "margin": 0.5},
]

CONVERSATIONAL = [
    {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "2+2?"},
        ],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    }
]

HH = [
    {
        "chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for nine minutes.",
        "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: Eggs cannot be boiled.",
    },
    {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a fact.\n\nAssistant: Honey never spoils.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a fact.\n\nAssistant: The moon is cheese.",
    },
]

RANKING = [
    {
        "prompt": "Rank these greetings.",
        "responses": ["Hello there!", "Yo.", "Good day to you.", "Hi."],
        "ranking": [[2], [0, 3], [1]],
        "likert": [6, 2, 7, None],
        "flags": [[], ["inappropriate_for_assistant"], [], []],
        "rater": None,
        "origin": "greeting-study",
        "source": "human",
        "probability": None,
        "margin": None,
        "all_bad": False,
    },
    {
        "prompt": "Which is more polite?",
        "responses": ["Please pass the salt.", "Salt. Now."],
        "ranking": [[0], [1]],
        "likert": [None, None],
        "flags": [[], []],
        "rater": None,
        "origin": "rlaif",
        "source": "ai",
        "probability": 0.83,
        "margin": None,
        "all_bad": False,
    },
]

SFT = [
    {
        "prompt": "Write a haiku about rain.",
        "completion": "Soft rain on the roof,\nthe gutters hum their one song,\nthe street shines like glass.",
    },
    {"prompt": "What is 12 * 12?", "completion": "144."},
]

RANKING_DATA_FIELDS = [
    "prompt",
    "responses",
    "ranking",
    "likert",
    "flags",
    "rater",
    "origin",
    "source",
    "probability",
    "margin",
    "all_bad",
]


class TestRoundTrips:
    def test_preference_pairs_come_back_as_they_went_in(self):
        project = ProjectFactory()
        import_bytes(project, jsonl(PREFERENCE), "prefs.jsonl")
        assert export(project, "preference") == PREFERENCE

    def test_conversational_preference_pairs_keep_every_turn(self):
        project = ProjectFactory()
        import_bytes(project, jsonl(CONVERSATIONAL), "chat.jsonl")
        assert export(project, "preference", conversational=True) == CONVERSATIONAL
        assert Prompt.objects.get().messages == CONVERSATIONAL[0]["prompt"]

    def test_hh_transcripts_come_back_as_they_went_in(self):
        project = ProjectFactory()
        result = import_bytes(project, jsonl(HH), "hh.jsonl")
        assert result.kind == "hh"
        assert Prompt.objects.get(messages__0__content="Hi").messages == [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me a fact."},
        ]
        assert export(project, "hh") == HH

    def test_rankings_keep_ties_likert_flags_and_soft_ai_labels(self):
        project = ProjectFactory()
        import_bytes(project, jsonl(RANKING), "rankings.jsonl")
        exported = export(project, "ranking")
        assert [{key: record[key] for key in RANKING_DATA_FIELDS} for record in exported] == RANKING
        ai = Judgement.objects.get(source="ai")
        assert (ai.rater, ai.origin, ai.probability) == (None, "rlaif", 0.83)

    def test_demonstrations_come_back_as_sft_data(self):
        project = ProjectFactory()
        import_bytes(project, jsonl(SFT), "demos.jsonl")
        assert export(project, "sft") == SFT
        conversational = [
            {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}
            for r in SFT
        ]
        assert export(project, "sft", conversational=True) == conversational
        other = ProjectFactory()
        import_bytes(other, jsonl(conversational), "chat-demos.jsonl")
        assert export(other, "sft") == SFT

    def test_a_ranking_by_a_known_rater_comes_back_with_their_name(self):
        project = ProjectFactory()
        UserFactory(username="alice")
        record = {**RANKING[0], "rater": "alice", "origin": ""}
        import_bytes(project, jsonl([record]), "alice.jsonl")
        assert export(project, "ranking")[0]["rater"] == "alice"
        assert Judgement.objects.get().rater.username == "alice"

    def test_csv_and_parquet_files_import_like_jsonl(self, tmp_path):
        project = ProjectFactory()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["prompt", "chosen", "rejected", "margin"])
        writer.writeheader()
        writer.writerows(PREFERENCE)
        import_bytes(project, buffer.getvalue().encode(), "prefs.csv")
        assert export(project, "preference") == PREFERENCE

        other = ProjectFactory()
        table = pa.Table.from_pylist([{key: row.get(key) for key in RANKING_DATA_FIELDS} for row in RANKING])
        sink = io.BytesIO()
        pq.write_table(table, sink)
        import_bytes(other, sink.getvalue(), "rankings.parquet")
        assert [{key: r[key] for key in RANKING_DATA_FIELDS} for r in export(other, "ranking")] == RANKING

    def test_parquet_exports_hold_the_same_records_as_jsonl(self):
        project = ProjectFactory()
        import_bytes(project, jsonl(PREFERENCE), "prefs.jsonl")
        assert export(project, "preference", file_format="parquet") == PREFERENCE
        import_bytes(project, jsonl(RANKING), "rankings.jsonl")
        assert export(project, "ranking", file_format="parquet") == export(project, "ranking")

    def test_the_oasst_sample_keeps_its_human_ranks(self):
        project = ProjectFactory()
        trees = (ROOT / "labeling" / "demo_data" / "en_100_tree.jsonl").read_bytes()
        result = import_bytes(project, trees, "en_100_tree.jsonl")
        assert (result.kind, result.records, result.created["tasks"], result.created["judgements"]) == (
            "oasst",
            100,
            212,
            212,
        )
        first_tree = json.loads(trees.splitlines()[0])
        replies = sorted(
            (r for r in first_tree["prompt"]["replies"] if r.get("rank") is not None), key=lambda r: r["rank"]
        )
        record = next(r for r in export(project, "ranking") if r["prompt"] == first_tree["prompt"]["text"])
        assert [record["responses"][group[0]] for group in record["ranking"]] == [r["text"] for r in replies]

    def test_prompts_and_tasks_import_without_judgements(self):
        project = ProjectFactory(overlap=3)
        prompts = [{"prompt": "Hello?"}, {"messages": [{"role": "user", "content": "Bye?"}], "id": "bye-1"}]
        import_bytes(project, jsonl(prompts), "prompts.jsonl")
        tasks = [{"prompt": "Pick one.", "responses": ["A", {"text": "B", "origin": "gpt-x"}, "C"]}]
        result = import_bytes(project, jsonl(tasks), "tasks.jsonl")
        assert result.created == {"prompts": 1, "responses": 3, "tasks": 1}
        task = ComparisonTask.objects.get()
        assert (task.required_judgements, task.status) == (3, "open")
        assert list(Response.objects.order_by("id").values_list("text", "origin")) == [
            ("A", "imported"),
            ("B", "gpt-x"),
            ("C", "imported"),
        ]
        assert Prompt.objects.get(external_id="bye-1").text == "Bye?"


class TestImportRules:
    def test_a_bad_record_on_line_37_imports_nothing_and_says_line_37(self):
        project = ProjectFactory()
        records = [{"prompt": f"Question {i}?", "chosen": "yes", "rejected": "no"} for i in range(1, 51)]
        records[36] = {"prompt": "Question 37?", "chosen": "", "rejected": "no"}
        with pytest.raises(ApplicationError) as error:
            import_bytes(project, jsonl(records), "prefs.jsonl", kind="preference")
        assert error.value.message.startswith("Line 37, field 'chosen'")
        assert error.value.extra == {"line": 37, "field": "chosen"}
        assert (Prompt.objects.count(), Response.objects.count(), Judgement.objects.count()) == (0, 0, 0)

    @pytest.mark.parametrize(
        "record, message",
        [
            ({"prompt": "x", "responses": ["only one"]}, "field 'responses': A task holds between 2 and 9"),
            ({"prompt": "x", "responses": ["a", "b"], "ranking": [[0], [2]]}, "field 'ranking'"),
            ({"prompt": "x", "responses": ["a", "b"], "ranking": [[0], [1]], "likert": [9, 1]}, "field 'likert'"),
            (
                {"prompt": "x", "responses": ["a", "b"], "ranking": [[0], [1]], "flags": [["rude"], []]},
                "field 'flags': Unknown flag 'rude'",
            ),
            ({"prompt": "x", "chosen": "a", "rejected": "b", "margin": -1}, "field 'margin'"),
            ({"prompt": "x", "chosen": "a", "rejected": "b", "margin": 1e308}, "expected a number from 0.0 to 3.0"),
            ({"chosen": "no transcript", "rejected": "here"}, "field 'chosen': not an HH transcript"),
            ({"messages": [{"role": "robot", "content": "x"}]}, "field 'messages'"),
        ],
    )
    def test_bad_records_are_named_by_line_and_field(self, record, message):
        project = ProjectFactory()
        good = {"prompt": "fine", "responses": ["a", "b"], "ranking": [[0], [1]]} if "responses" in record else None
        lines = [record] if good is None else [good, record]
        with pytest.raises(ApplicationError) as error:
            import_bytes(project, jsonl(lines), "bad.jsonl")
        assert f"Line {len(lines)}" in error.value.message and message in error.value.message
        assert not Prompt.objects.exists()

    def test_broken_json_is_named_by_line(self):
        with pytest.raises(ApplicationError, match="Line 2: not valid JSON"):
            import_bytes(ProjectFactory(), b'{"prompt": "a"}\n{"prompt": \n', "broken.jsonl")

    def test_importing_twice_changes_nothing_the_second_time(self):
        project = ProjectFactory()
        first = import_bytes(project, jsonl(PREFERENCE), "prefs.jsonl")
        second = import_bytes(project, jsonl(PREFERENCE), "prefs.jsonl")
        assert first.created == {"prompts": 3, "responses": 6, "tasks": 3, "judgements": 3}
        assert second.created == {}
        assert second.skipped == {"prompts": 3, "responses": 6, "tasks": 3, "judgements": 3}
        assert Judgement.objects.count() == 3

    def test_the_same_prompt_text_is_one_prompt(self):
        project = ProjectFactory()
        import_bytes(project, jsonl([{"prompt": "Same?"}]), "a.jsonl")
        result = import_bytes(project, jsonl([{"prompt": "Same?", "responses": ["x", "y"]}]), "b.jsonl")
        assert Prompt.objects.count() == 1 and result.skipped["prompts"] == 1

    def test_imported_judgements_count_towards_the_overlap(self):
        project = ProjectFactory(overlap=1)
        import_bytes(project, jsonl(PREFERENCE), "prefs.jsonl")
        assert set(ComparisonTask.objects.values_list("status", flat=True)) == {"complete"}

    def test_the_command_reports_counts_and_refuses_bad_files_without_a_traceback(self, tmp_path, capsys):
        project = ProjectFactory(slug="cli")
        good = tmp_path / "prefs.jsonl"
        good.write_bytes(jsonl(PREFERENCE))
        call_command("import_data", str(good), "--project", "cli")
        assert "created 3 prompts, 6 responses, 3 tasks, 3 judgements" in capsys.readouterr().out
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(jsonl([{"prompt": "x", "chosen": 5, "rejected": "y"}]))
        with pytest.raises(CommandError, match="bad.jsonl: Line 1, field 'chosen'.*Nothing was imported"):
            call_command("import_data", str(bad), "--project", "cli")
        assert Judgement.objects.filter(task__project=project).count() == 3


class TestExports:
    def test_the_garbage_collector_is_paused_only_inside_a_block_and_back_on_after_a_failure(self):
        seen = []

        def records():
            for i in range(3):
                seen.append(gc.isenabled())
                yield {"prompt": f"p{i}", "chosen": "a", "rejected": "b", "margin": None}
            raise ApplicationError("the database went away")

        chunks = exporters.jsonl_chunks(records(), lines_per_chunk=2)
        assert next(chunks).count(b"\n") == 2
        assert gc.isenabled()  # not held while the stream waits between chunks
        with pytest.raises(ApplicationError):
            next(chunks)
        with pytest.raises(ApplicationError):
            exporters.write_parquet(records(), io.BytesIO(), kind="preference")
        assert seen == [False] * 6  # every record was made with the collector off
        assert gc.isenabled()

    def test_a_k_wise_ranking_gives_every_ordered_pair_and_no_tied_one(self):
        project = ProjectFactory()
        import_bytes(project, jsonl(RANKING[:1]), "rankings.jsonl")
        pairs = {(row["chosen"], row["rejected"]) for row in export(project, "preference")}
        # [[2], [0, 3], [1]]: 2 beats 0, 3 and 1; 0 and 3 beat 1; 0 and 3 are tied.
        assert pairs == {
            ("Good day to you.", "Hello there!"),
            ("Good day to you.", "Hi."),
            ("Good day to you.", "Yo."),
            ("Hello there!", "Yo."),
            ("Hi.", "Yo."),
        }

    def test_filters_select_by_source_rater_gold_and_time(self, rater):
        project = ProjectFactory(members=[rater])
        import_bytes(project, jsonl(RANKING), "rankings.jsonl")
        assert [r["source"] for r in export(project, "ranking", source="ai")] == ["ai"]
        assert export(project, "ranking", raters=("rater",)) == []
        first = ComparisonTask.objects.order_by("id").first()
        ids = first.response_ids()
        first.is_gold, first.gold_ranking = True, [ids]
        first.save()
        assert len(export(project, "ranking", gold="exclude")) == 1
        assert len(export(project, "ranking", gold="only")) == 1
        earlier = Judgement.objects.order_by("id").first()
        Judgement.objects.filter(pk=earlier.pk).update(created_at=earlier.created_at - timedelta(hours=1))
        latest = Judgement.objects.order_by("created_at").last().created_at
        assert len(export(project, "ranking", since=latest)) == 1
        assert len(export(project, "ranking", until=latest)) == 1

    def test_the_prompts_export_lists_every_prompt_once_with_its_id_and_its_turns_in_both_formats(self):
        project = ProjectFactory()
        import_bytes(project, jsonl(RANKING), "rankings.jsonl")
        conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                        {"role": "user", "content": "And?"}]  # fmt: skip
        extra = Prompt.objects.create(project=project, messages=conversation)
        ProjectFactory().prompts.create(messages=[{"role": "user", "content": "Elsewhere."}])
        prompts = list(Prompt.objects.filter(project=project).order_by("id"))
        rows = export(project, "prompts")
        assert [row["prompt_id"] for row in rows] == [prompt.pk for prompt in prompts]
        assert rows[-1] == {
            "prompt_id": extra.pk, "prompt": "User: Hi\n\nAssistant: Hello\n\nUser: And?", "messages": conversation,
        }  # fmt: skip
        assert export(project, "prompts", file_format="parquet")[-1] == rows[-1]
        assert export(project, "prompts", conversational=True, file_format="parquet")[-1] == {
            "prompt_id": extra.pk, "prompt": conversation, "messages": conversation,
        }  # fmt: skip

    def test_an_exported_preference_file_trains_trls_reward_trainer(self, tmp_path):
        from datasets import load_dataset
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast
        from trl import RewardConfig, RewardTrainer

        project = ProjectFactory()
        # Margins known for some pairs only: unknown ones are written as 0, which TRL reads like no margin.
        mixed = [*PREFERENCE, {"prompt": "Pick a colour.", "chosen": "Blue.", "rejected": "Chair."}]
        import_bytes(project, jsonl(mixed), "prefs.jsonl")
        path = tmp_path / "preference.jsonl"
        with open(path, "wb") as stream:
            exporters.write_export("preference", "jsonl", selectors.ExportFilter(project_id=project.pk), stream)
        dataset = load_dataset("json", data_files=str(path), split="train")
        assert dataset.column_names == ["prompt", "chosen", "rejected", "margin"]
        assert dataset["margin"] == [2.0, 1.0, 0.5, 0.0]

        words = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        words.pre_tokenizer = pre_tokenizers.Whitespace()
        texts = [f"{row['prompt']} {row['chosen']} {row['rejected']}" for row in dataset]
        words.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[EOS]"]))
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=words, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
        )
        special = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
        config = GPT2Config(
            vocab_size=tokenizer.vocab_size, n_layer=2, n_embd=32, n_head=2, n_positions=64, num_labels=1,
            bos_token_id=tokenizer.eos_token_id, **special,
        )  # fmt: skip
        args = RewardConfig(
            output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=3, report_to=[], use_cpu=True,
            save_strategy="no", logging_steps=1, max_length=64,
        )  # fmt: skip
        trainer = RewardTrainer(
            model=GPT2ForSequenceClassification(config), args=args, train_dataset=dataset, processing_class=tokenizer
        )
        result = trainer.train()
        assert trainer.state.global_step == 1
        assert result.training_loss > 0


class TestSnapshots:
    def test_a_snapshot_freezes_the_file_with_its_hash_counts_and_filter(self, settings, tmp_path):
        settings.ARTEFACTS_DIR = tmp_path
        project = ProjectFactory()
        import_bytes(project, jsonl(RANKING), "rankings.jsonl")
        snapshot = services.dataset_snapshot_create(
            project=project, kind="preference", selection=selectors.ExportFilter(project_id=project.pk, source="human")
        )
        path = tmp_path / snapshot.path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == snapshot.sha256
        assert snapshot.row_count == len(path.read_bytes().splitlines()) == 5
        assert snapshot.counts["judgements"] == 1 and snapshot.counts["by_source"] == {"human": 1}
        assert snapshot.filters["source"] == "human" and snapshot.code_version
        assert not (path.stat().st_mode & 0o222), "a snapshot's file is read-only"

    def test_a_failed_snapshot_leaves_no_file_behind(self, settings, tmp_path, monkeypatch):
        settings.ARTEFACTS_DIR = tmp_path
        project = ProjectFactory()
        import_bytes(project, jsonl(PREFERENCE), "prefs.jsonl")

        def refuse(**kwargs):
            raise RuntimeError("database went away")

        monkeypatch.setattr(DatasetSnapshot.objects, "create", refuse)
        with pytest.raises(RuntimeError):
            services.dataset_snapshot_create(project=project, kind="preference")
        assert list(tmp_path.rglob("*.jsonl*")) == []


def test_demonstrations_written_by_raters_export_as_sft(rater):
    project = ProjectFactory(members=[rater], demonstrate_enabled=True)
    prompt = Prompt.objects.create(project=project, messages=[{"role": "user", "content": "Hi?"}])
    services.demonstration_submit(author=rater, prompt=prompt, text="Hello! How can I help?", client_submission_id="d")
    assert export(project, "sft") == [{"prompt": "Hi?", "completion": "Hello! How can I help?"}]
    assert Demonstration.objects.count() == 1
