"""The JSON checks on their own, without a database."""

import pytest
from django.core.exceptions import ValidationError

from labeling import validation
from labeling.models import Flag


@pytest.mark.parametrize(
    "ranking",
    [
        [[1], [2], [3]],
        [[3, 1, 2]],
        [[2], [1, 3]],
    ],
)
def test_every_partition_of_the_responses_is_a_valid_ranking(ranking):
    validation.validate_ranking(ranking, [1, 2, 3])


@pytest.mark.parametrize(
    "ranking, message",
    [
        ([[1], [2]], "leaves out"),
        ([[1], [2], [3], [4]], "not part of this task: [4]"),
        ([[1, 2], [2, 3]], "more than once"),
        ([[1], [], [2, 3]], "Group 1"),
        ([[1], ["2"], [3]], "'2', not a response id"),
        ([[1], [True], [3]], "not a response id"),
        ([1, 2, 3], "Group 0"),
        ({}, "non-empty list"),
    ],
)
def test_rankings_that_are_not_partitions_are_refused_with_the_reason(ranking, message):
    with pytest.raises(ValidationError) as error:
        validation.validate_ranking(ranking, [1, 2, 3])
    assert message in error.value.messages[0]


def test_likert_keys_may_be_strings_from_json():
    validation.validate_likert({"1": 1, "2": 7}, [1, 2])
    with pytest.raises(ValidationError, match="not a response id"):
        validation.validate_likert({"first": 3}, [1, 2])


def test_flags_are_lists_of_known_names_without_repeats():
    known = Flag.values
    validation.validate_flags({"1": ["hallucination"], "2": []}, [1, 2], known)
    with pytest.raises(ValidationError, match="must be a list"):
        validation.validate_flags({"1": "hallucination"}, [1, 2], known)
    with pytest.raises(ValidationError, match="repeated"):
        validation.validate_flags({"1": ["hallucination", "hallucination"]}, [1, 2], known)


def test_the_instructgpt_flag_set_is_complete():
    assert len(Flag.values) == 9
    assert {"hallucination", "fails_instruction", "moral_judgement", "denigrates_protected_class"} <= set(Flag.values)


def test_an_empty_shown_order_means_unknown_and_mixed_types_are_refused():
    validation.validate_shown_order([], [1, 2])
    with pytest.raises(ValidationError):
        validation.validate_shown_order([1, "2"], [1, 2])
