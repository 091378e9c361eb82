"""AI feedback against people on the demo project: how often the default feedback model
(``smollm2-135m-instruct``) prefers the response the human raters ranked higher.

Sets the demo project up in a throwaway SQLite database (the same data `make run` serves), takes every pair
(better, worse) the human rankings imply (ties left out), samples ``--pairs`` of them (seeded), and asks the
feedback model each principle's question with the paper's multiple-choice prompt, both orders averaged
(``training.cai.ai_preferences``). Prints agreement per principle and overall, the mean probability given to
the human choice, and the time taken; responses are cut to ``--max-chars`` characters to bound the cost on a
CPU. The last line is one JSON object.

    python bench/ai_feedback.py            # 120 pairs, principles Helpful and Harmless
    python bench/ai_feedback.py --quick    # 40 pairs, Helpful only
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 pairs and one principle")
    parser.add_argument("--pairs", type=int, default=120)
    parser.add_argument("--principles", default="Helpful,Harmless", help="names in the default constitution")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-chars", type=int, default=1200, help="characters kept of each response")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cache-dir", default=os.environ.get("RLHF_STUDIO_CACHE", str(ROOT / "var" / "cache")))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.principles = 40, "Helpful"
    return args


def human_pairs() -> list[tuple[list[dict], str, str]]:
    """(conversation, better, worse) for every untied pair of every human judgement of the demo project."""
    from labeling.models import Judgement, Project
    from labeling.services import DEMO_SLUG

    project = Project.objects.get(slug=DEMO_SLUG)
    pairs = []
    judgements = Judgement.objects.filter(task__project=project, source="human").select_related("task__prompt")
    for judgement in judgements:
        texts = dict(judgement.task.responses.values_list("pk", "text"))
        groups = judgement.ranking
        for upper, group in enumerate(groups):
            for lower in groups[upper + 1 :]:
                pairs += [(judgement.task.prompt.messages, texts[w], texts[lose]) for w in group for lose in lower]
    return pairs


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{folder}/demo.sqlite3", "SECRET_KEY": "bench-only",
               "DEBUG": "false", "LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "config.settings",
               "ARTEFACTS_DIR": f"{folder}/artefacts"}  # fmt: skip
        os.environ.update(env)
        for command in (["migrate", "--noinput", "-v", "0"], ["demo_setup"]):
            subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True)
        import django

        django.setup()
        from labeling.models import Constitution
        from training.cai import Comparison, ai_preferences
        from training.models import load_causal_lm

        pairs = human_pairs()
        random.Random(args.seed).shuffle(pairs)
        pairs = pairs[: args.pairs]
        constitution = Constitution.objects.get(is_default=True)
        principles = [constitution.principles.get(name=name.strip()) for name in args.principles.split(",")]
        model, tokenizer = load_causal_lm(args.model, args.cache_dir)
        model.eval()
        cut = args.max_chars
        results, started = {}, time.monotonic()
        for principle in principles:
            comparisons = [Comparison(messages, principle.comparison_question, better[:cut], worse[:cut])
                           for messages, better, worse in pairs]  # fmt: skip
            labels = []
            for first in range(0, len(comparisons), args.batch_size):
                labels += ai_preferences(model, tokenizer, comparisons[first : first + args.batch_size])
            agreement = sum(label > 0.5 for label in labels) / len(labels)
            results[principle.name] = {
                "pairs": len(labels),
                "agreement": round(agreement, 4),
                "mean_probability_of_human_choice": round(sum(labels) / len(labels), 4),
            }
            mean = results[principle.name]["mean_probability_of_human_choice"]
            print(
                f"{principle.name}: agreement {agreement:.3f} on {len(labels)} pairs, mean p(human choice) {mean:.3f}"
            )
        seconds = time.monotonic() - started
    overall = sum(r["agreement"] * r["pairs"] for r in results.values()) / sum(r["pairs"] for r in results.values())
    print(f"overall agreement {overall:.3f}; {seconds:.0f} s")
    print(json.dumps({"model": args.model, "by_principle": results, "agreement": round(overall, 4),
                      "pairs_available": len(human_pairs()), "seconds": round(seconds, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
