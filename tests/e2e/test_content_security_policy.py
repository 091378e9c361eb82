"""Every page works under the Content-Security-Policy, which allows only our own scripts and styles: the rater
pages, the admin's run page with its curves and log, and the API docs, with no violation reported."""

import pytest
from django.utils import timezone

from labeling import services
from labeling.models import TrainingRun
from tests.factories import PASSWORD, ProjectFactory, PromptFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "| model | score |\n|:--|--:|\n| a | 1 |\n\n![a chart](https://tracker.example/pixel.png)"


def test_the_pages_run_under_the_policy_without_a_violation(strict_session):
    session = strict_session
    staff = UserFactory(username="chief", is_staff=True, is_superuser=True, rater=True)
    project = ProjectFactory(name="CSP project", members=[staff], overlap=1, demonstrate_enabled=True)
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": "Compare these."}])
    responses = [ResponseFactory(prompt=prompt, text=text) for text in (TABLE, "```python\nprint(1)\n```")]
    services.comparison_task_create(project=project, prompt=prompt, responses=responses)
    run = TrainingRun.objects.create(
        project=project, kind="reward", status="failed", error="Out of memory.", log_tail="line\n" * 50,
        history=[{"step": step, "loss": 1.0 / step, "accuracy": 0.5 + step / 40} for step in range(1, 11)],
        started_at=timezone.now(), finished_at=timezone.now(),
    )  # fmt: skip
    page = session.page

    response = page.goto(session.base_url + "/login/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy
    session.log_in("chief", PASSWORD)
    session.goto(f"/p/{project.slug}/")
    page.locator("article.response").nth(1).wait_for()
    assert page.locator("article.response td.align-right").count() == 1  # aligned by class, not style
    assert page.locator("article.response a.image-link").count() == 1 and page.locator("article img").count() == 0
    session.shot("workbench")
    session.goto(f"/p/{project.slug}/demonstrate/")
    page.wait_for_selector("textarea")

    session.goto(f"/admin/labeling/trainingrun/{run.pk}/change/")
    # The curves, drawn by the vendored uPlot under the policy: a canvas with the run's points, whose legend shows
    # the value under the cursor.
    chart = page.locator(f'figure.chart[data-chart="run-{run.pk}-loss"]')
    chart.locator("canvas").wait_for()
    assert chart.evaluate("figure => figure.chart.data[1]") == [1.0 / step for step in range(1, 11)]
    over = chart.locator(".u-over")
    last = chart.evaluate("figure => figure.chart.valToPos(10, 'x')")  # where step 10 is drawn, in CSS pixels
    over.hover(position={"x": last - 1, "y": over.bounding_box()["height"] / 2})
    legend = chart.locator(".u-legend .u-series").nth(1).locator(".u-value")
    page.wait_for_function("element => element.textContent !== '-'", arg=legend.element_handle(), timeout=5000)
    assert legend.inner_text() == "0.1"  # the loss at step 10
    log = page.locator("pre.run-log")
    log.wait_for()
    page.wait_for_load_state("load")
    assert log.evaluate("element => element.scrollTop") > 0  # run_page.js ran: the log opens on its end
    session.shot("run-page")
    session.goto(f"/admin/labeling/project/{project.pk}/train-reward/")
    session.goto("/api/docs/")
    page.wait_for_selector("#swagger-ui .opblock", timeout=20000)  # Swagger UI drew the operations
    session.shot("api-docs")

    assert session.csp_violations == [] and session.errors == []
