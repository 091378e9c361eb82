"""Several policy versions answer the same eval prompts, one answer each: the answers of an evaluation's blinded
pairwise comparisons.

Reads a prompts export and a versions file (``{"name": model, ...}``: a named default, a Hugging Face id or a
local path each), has each version answer the same prompts (drawn with the same seed) with the sampling loop
every generating command shares, one version loaded at a time, and writes
``{"prompt_id", "version", "response", "finished"}`` lines.
"""

import json
from pathlib import Path

from training.config import EvaluateConfig
from training.generate import generate_responses
from training.runtime import RESPONSES_FILE, MetricsSink, Progress, write_result


def read_versions(path: str | Path) -> dict[str, str]:
    versions = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(versions, dict) or not versions:
        raise ValueError(f"{path}: expected an object of version names to models.")
    return {str(name): str(model) for name, model in versions.items()}


def answer_eval_prompts(
    versions: dict[str, str],
    prompts_path: str | Path,
    output_dir: str | Path,
    config: EvaluateConfig,
    *,
    cache_dir: str | Path | None = None,
    on_metrics: MetricsSink | None = None,
) -> dict:
    """Write ``output_dir/responses.jsonl`` (every version's answers) and ``result.json``; returns the summary.
    Each version's own files stay in ``output_dir/version-<n>/``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(on_metrics, "evaluate")
    progress.phase("generating")
    sink = on_metrics or (lambda line: None)
    summaries = {}
    partial = output_dir / f"{RESPONSES_FILE}.partial"
    with open(partial, "w", encoding="utf-8") as out:
        for index, (name, model) in enumerate(versions.items()):

            def scaled(line: dict, index: int = index, name: str = name) -> None:
                """The version's own progress as a share of the whole run's; its end is not the run's."""
                line = {**line, "version": name}
                if "progress" in line:
                    line["progress"] = round((index + float(line["progress"])) / len(versions), 4)
                if line.get("event") == "done":
                    line["event"] = "progress"
                sink(line)

            folder = output_dir / f"version-{index}"
            summaries[name] = generate_responses(
                model, prompts_path, folder, samples=1, max_new_tokens=config.max_new_tokens,
                temperature=config.temperature, batch_size=config.batch_size, seed=config.seed,
                max_prompts=config.max_prompts, cache_dir=cache_dir, on_metrics=scaled,
                engine_settings=config.rollout_settings(),
            )  # fmt: skip
            with open(folder / RESPONSES_FILE, encoding="utf-8") as answers:
                for line in answers:
                    if line.strip():
                        out.write(json.dumps({**json.loads(line), "version": name}) + "\n")
            progress.update((index + 1) / len(versions), force=True)
    partial.rename(output_dir / RESPONSES_FILE)
    summary = {
        "versions": len(versions),
        "prompts": max((item["prompts"] for item in summaries.values()), default=0),
        "responses": sum(item["responses"] for item in summaries.values()),
        "finished_rate": {name: item["finished_rate"] for name, item in summaries.items()},
        "seconds": round(sum(item["seconds"] for item in summaries.values()), 2),
    }
    write_result(output_dir, {"responses_path": str(output_dir / RESPONSES_FILE), "metrics": summary})
    progress.done(summary)
    return summary
