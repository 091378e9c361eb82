"""The API under generated input: schemathesis reads the OpenAPI schema and sends every operation examples
built from it (valid and odd values within the schema), as a staff user's token and as a rater's. No answer
may be a 5xx, use a status or content type the schema does not list, or break its documented shape."""

from collections import Counter

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from labeling import services
from tests.factories import task_create

EXAMPLES = 25  # per operation; each is sent twice, once per role
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
statuses: Counter = Counter()
calls: Counter = Counter()


@pytest.fixture
def api_schema(db):
    """The schema, and the app called in this process as WSGI. As with Django's test client, a request's end
    must not close the database connection that holds the test's transaction."""
    from config.wsgi import application

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def world(staff, rater, project, artefacts):
    """Two tokens, and rows for the generated ids to hit: a project the rater belongs to, tasks with a
    judgement, a snapshot with its file, an import job."""
    tasks = [task_create(project=project, k=k) for k in (2, 3)]
    services.judgement_create(task=tasks[0], rater=rater, ranking=[tasks[0].response_ids()], client_submission_id="f")
    snapshot = services.dataset_snapshot_create(project=project, kind="preference", created_by=staff)
    return {
        "tokens": {"staff": Token.objects.create(user=staff).key, "rater": Token.objects.create(user=rater).key},
        "slug": project.slug,
        "ids": {"task_id": tasks[1].pk, "snapshot_id": snapshot.pk, "prompt_id": tasks[1].prompt_id},
    }


def aim(case, world) -> None:
    """Half the examples aim at rows that exist (chosen by the generated id's parity), so that the
    operations get past their lookups; the other half keep the generated values."""
    parameters = case.path_parameters or {}
    if "slug" in parameters:
        parameters["slug"] = world["slug"]
    for name, value in parameters.items():
        if name in world["ids"] and isinstance(value, int) and value % 2 == 0:
            parameters[name] = world["ids"][name]


def test_no_operation_answers_a_5xx_or_leaves_its_schema(api_schema, world):
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def send(case) -> None:
            aim(case, world)
            for role, token in world["tokens"].items():
                response = case.call(headers={"Authorization": f"Token {token}"})
                statuses[response.status_code] += 1
                calls[role] += 1
                case.validate_response(response, checks=CHECKS)

        try:
            send()
        except (Exception, BaseExceptionGroup) as error:  # every operation's failure is collected, then shown
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    print(f"fuzzed {len(operations)} operations: {dict(calls)} calls, statuses {dict(sorted(statuses.items()))}")
    assert len(operations) >= 25
    assert not failures, "\n\n".join(failures)
