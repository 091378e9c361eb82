"""One ranking per task: ranked pairs over the judgements, weighted by trust, and the consensus export."""

import io
import json

import pyarrow.parquet as pq
import pytest

from labeling import consensus, services
from labeling.models import Judgement
from tests.factories import UserFactory, task_create

pytestmark = pytest.mark.django_db


def test_the_majority_order_wins_and_a_response_with_no_majority_over_another_shares_its_place():
    judgements = [([[1], [2], [3]], 1.0), ([[1], [3], [2]], 1.0), ([[2], [1], [3]], 1.0)]
    assert consensus.ranked_pairs([1, 2, 3], judgements) == [[1], [2], [3]]
    assert consensus.ranked_pairs([1, 2, 3], [([[1], [2], [3]], 1.0), ([[1], [3], [2]], 1.0)]) == [[1], [2, 3]]
    # The first judgement keeps all three of its pairs, the others two each.
    assert consensus.agreement_with([[1], [2], [3]], judgements) == pytest.approx(7 / 9)


def test_a_cycle_is_broken_at_its_weakest_majority():
    # 1 > 2 by 3, 2 > 3 by 3, 3 > 1 by 1: a Condorcet cycle, and the weakest majority, 3 > 1, is dropped.
    votes = [([[1], [2], [3]], 1.0)] * 3 + [([[2], [3], [1]], 1.0)] * 2 + [([[3], [1], [2]], 1.0)] * 2
    assert consensus.ranked_pairs([1, 2, 3], votes) == [[1], [2], [3]]
    # Weigh the last two five times: 1 > 2 by 11, 3 > 1 by 9, 3 > 2 by 5, no cycle left.
    weighted = votes[:5] + [([[3], [1], [2]], 5.0)] * 2
    assert consensus.ranked_pairs([1, 2, 3], weighted) == [[3], [1], [2]]


def test_weights_decide_and_a_weightless_judgement_changes_nothing():
    majority = [([[2], [1]], 1.0), ([[2], [1]], 1.0)]
    assert consensus.ranked_pairs([1, 2], majority) == [[2], [1]]
    assert consensus.ranked_pairs([1, 2], majority + [([[1], [2]], 3.0)]) == [[1], [2]]
    assert consensus.ranked_pairs([1, 2], majority + [([[1], [2]], 0.0)] * 5) == [[2], [1]]


def test_the_consensus_export_has_one_record_per_task_with_the_merged_ranking(project, staff_api):
    raters = UserFactory.create_batch(3, rater=True)
    tasks = [task_create(project=project, k=3) for _ in range(3)]
    for task in tasks:
        a, b, c = task.response_ids()
        rankings = [[[a], [b], [c]], [[a], [c], [b]], [[b], [a], [c]]]
        for number, (rater, ranking) in enumerate(zip(raters, rankings, strict=True)):
            Judgement.objects.create(
                task=task, rater=rater, ranking=ranking, client_submission_id=f"c{task.pk}{number}"
            )
    url = f"/api/v1/projects/{project.slug}/exports/consensus"
    response = staff_api.get(url)
    assert response.status_code == 200
    records = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert [record["task_id"] for record in records] == [task.pk for task in tasks]
    for record, task in zip(records, tasks, strict=True):
        assert record["ranking"] == [[0], [1], [2]] and record["response_ids"] == task.response_ids()
        assert record["method"] == "ranked_pairs" and record["judgements"] == 3
        assert record["agreement"] == pytest.approx(7 / 9)
    parquet = staff_api.get(url, {"format": "parquet"})
    table = pq.read_table(io.BytesIO(b"".join(parquet.streaming_content)))
    assert table.num_rows == 3 and table.column("ranking").to_pylist()[0] == [[0], [1], [2]]

    # After an audit the judgements carry their raters' weights (1.0 here: too few tasks to tell the raters apart),
    # and the consensus is the same.
    services.rater_stats_refresh(project=project)
    again = [json.loads(line) for line in b"".join(staff_api.get(url).streaming_content).splitlines()]
    assert [record["ranking"] for record in again] == [[[0], [1], [2]]] * 3
