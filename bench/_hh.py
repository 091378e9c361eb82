"""The HH-RLHF harmless pairs in ``bench/data`` (see its README), read for the benchmarks."""

import json
import re
from pathlib import Path

HH = Path(__file__).resolve().parent / "data" / "hh-rlhf-harmless-1800.trl.jsonl"
TURN = re.compile(r"\n\n(Human|Assistant):")


def hh_turns(transcript: str) -> list[dict]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' as messages, the trailing empty assistant turn dropped."""
    parts = TURN.split(transcript)
    roles = {"Human": "user", "Assistant": "assistant"}
    turns = [
        {"role": roles[name], "content": text.strip()} for name, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    return [turn for turn in turns if turn["content"]]


def hh_records(path: Path = HH, limit: int = 0) -> list[dict]:
    """``{"prompt": messages, "chosen", "rejected"}`` for each pair with two non-empty replies, in file order."""
    records = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            chosen, rejected = record["chosen"].strip(), record["rejected"].strip()
            if chosen and rejected:
                records.append({"prompt": hh_turns(record["prompt"]), "chosen": chosen, "rejected": rejected})
            if limit and len(records) >= limit:
                break
    return records
