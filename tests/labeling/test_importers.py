import json

import pytest

from labeling.errors import ApplicationError
from labeling.importers import plain_prompts
from labeling.oasst import oasst_ranked_groups


def message(message_id, role, text, replies=(), rank=None, **extra):
    return {"message_id": message_id, "role": role, "text": text, "rank": rank, "replies": list(replies), **extra}


def test_ranked_groups_keep_the_conversation_path_ties_and_origins():
    tree = {
        "message_tree_id": "t",
        "prompt": message(
            "p1",
            "prompter",
            "Hi",
            [
                message(
                    "a1",
                    "assistant",
                    "Hello",
                    [
                        message(
                            "p2",
                            "prompter",
                            "Tell a joke",
                            [
                                message("j1", "assistant", "Joke one", rank=1),
                                message("j2", "assistant", "Joke two", rank=0),
                                message("j3", "assistant", "Joke three", rank=1, synthetic=True, model_name="chip"),
                            ],
                        )
                    ],
                    rank=0,
                ),
                message("a2", "assistant", "Hey", rank=1),
                message("a3", "assistant", "Removed", rank=2, deleted=True),
                message("a4", "assistant", "Unranked"),
            ],
        ),
    }
    groups = list(oasst_ranked_groups([json.dumps(tree)]))
    assert [group.external_id for group in groups] == ["p1", "p2"]

    first, second = groups
    assert first.messages == [{"role": "user", "content": "Hi"}]
    assert [[reply.external_id for reply in tier] for tier in first.ranking_groups()] == [["a1"], ["a2"]]

    assert second.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Tell a joke"},
    ]
    assert [[reply.external_id for reply in tier] for tier in second.ranking_groups()] == [["j2"], ["j1", "j3"]]
    assert {reply.external_id: reply.origin for reply in second.replies} == {"j1": "human", "j2": "human", "j3": "chip"}


def test_a_broken_tree_line_is_named():
    good = json.dumps({"prompt": message("p", "prompter", "Q")})
    with pytest.raises(ApplicationError, match="Line 2"):
        list(oasst_ranked_groups([good, '{"no_prompt": 1}']))


def test_plain_prompts_are_json_strings_one_per_line():
    assert list(plain_prompts(['"What is RLHF?"\n', "\n", '"Why?"'])) == [(1, "What is RLHF?"), (3, "Why?")]
    with pytest.raises(ApplicationError, match="Line 2: expected a non-empty JSON string"):
        list(plain_prompts(['"ok"', '{"prompt": "no"}']))
