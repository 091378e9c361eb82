"""Run tracking: every trainer run writes TensorBoard event files beside its metrics, and an MLflow run when
MLFLOW_TRACKING_URI names a store; both hold the same curves as metrics.jsonl. Read back with TensorBoard's and
MLflow's own readers, from a real MLflow file store."""

import json

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from training.cli import main
from training.models import prepare_policy_tokenizer, tiny_causal_lm, tiny_tokenizer
from training.runtime import METRICS_FILE, TENSORBOARD_DIR

WORDS = [f"w{i}" for i in range(12)] + ["say", "twice"]


@pytest.fixture
def sft_inputs(tmp_path):
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    tiny_causal_lm(tokenizer, layers=2, hidden=32).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"say w{i} twice", "completion": f"w{i} w{i}"}) for i in range(12)))
    return ["sft", "--data", str(data), "--model", str(tmp_path / "model"), "--epochs", "4", "--batch-size", "4",
            "--logging-steps", "1", "--learning-rate", "0.003"]  # fmt: skip


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's file store is kept for tests like this one
    return MlflowClient(tracking_uri=uri)


def run(argv: list[str], out) -> int:
    return main([*argv, "--out", str(out), "--metrics", str(out / METRICS_FILE)])


def losses_in_metrics(out) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    return [(line["step"], line["loss"]) for line in lines if "loss" in line and "step" in line]


def same_curve(points: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    """The same steps, and the same values to float32's precision (TensorBoard stores float32)."""
    return [step for step, _ in points] == [step for step, _ in expected] and [value for _, value in points] == (
        pytest.approx([value for _, value in expected], rel=1e-6)
    )


def test_a_run_s_curves_go_to_tensorboard_and_mlflow_as_in_its_metrics(sft_inputs, mlflow_store, tmp_path):
    out = tmp_path / "sft-7"
    assert run(sft_inputs, out) == 0
    expected = losses_in_metrics(out)
    assert len(expected) == 12 and expected[-1][1] < expected[0][1]  # 12 steps, and the loss fell

    events = EventAccumulator(str(out / TENSORBOARD_DIR))
    events.Reload()
    assert same_curve([(event.step, event.value) for event in events.Scalars("loss")], expected)
    assert "progress" not in events.Tags()["scalars"] and "learning_rate" in events.Tags()["scalars"]

    experiment = mlflow_store.get_experiment_by_name("rlhf-studio")
    (tracked,) = mlflow_store.search_runs([experiment.experiment_id])
    assert tracked.info.run_name == "sft-7" and tracked.info.status == "FINISHED"
    history = mlflow_store.get_metric_history(tracked.info.run_id, "loss")
    assert same_curve(sorted((metric.step, metric.value) for metric in history), expected)
    assert tracked.data.params["learning_rate"] == "0.003" and tracked.data.params["command"] == "sft"
    assert tracked.data.metrics["last_loss"] == pytest.approx(expected[-1][1])  # the done line's summary


def test_a_failed_run_ends_its_mlflow_run_failed(sft_inputs, mlflow_store, tmp_path):
    argv = [*sft_inputs, "--run-name", "broken-sft"]
    argv[argv.index("--data") + 1] = str(tmp_path / "missing.jsonl")
    assert run(argv, tmp_path / "out") == 2
    experiment = mlflow_store.get_experiment_by_name("rlhf-studio")
    (tracked,) = mlflow_store.search_runs([experiment.experiment_id])
    assert (tracked.info.run_name, tracked.info.status) == ("broken-sft", "FAILED")


def test_a_tracker_that_cannot_start_is_reported_and_the_run_goes_on(sft_inputs, tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where MLflow wants a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (blocked / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "out"
    assert run(sft_inputs, out) == 0
    assert "warning: mlflow tracking stopped (start)" in capsys.readouterr().err
    events = EventAccumulator(str(out / TENSORBOARD_DIR))
    events.Reload()
    assert len(events.Scalars("loss")) == 12  # TensorBoard still has every point
