"""Who sees which page: raters see their own projects, staff see everything, everyone else nothing."""

import pytest
from django.http import HttpRequest
from django.urls import reverse

from labeling import services
from labeling.models import Judgement
from labeling.permissions import judgements_visible_to, projects_visible_to
from tests.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("frontend:login"))


def test_a_rater_logs_in_and_sees_only_their_projects_with_tasks_left(client, rater, project, make_task, password):
    hidden = ProjectFactory(name="Somebody else's project")
    make_task(k=2)
    judged = make_task(k=3)
    services.judgement_create(task=judged, rater=rater, ranking=[judged.response_ids()], client_submission_id="x")
    make_task(k=2, in_project=hidden)

    response = client.post(reverse("frontend:login"), {"username": "rater", "password": password})
    assert response.status_code == 302 and response["Location"] == reverse("frontend:projects")

    page = client.get("/").content.decode()
    assert project.name in page
    assert hidden.name not in page
    assert list(projects_visible_to(rater)) == [project]
    row = page[page.index(f'data-project="{project.slug}"') :]
    assert '<td class="count">1</td>' in row.split("</tr>")[0]


def test_a_wrong_password_shows_an_error(client, rater):
    response = client.post(reverse("frontend:login"), {"username": "rater", "password": "nope"})
    assert response.status_code == 200
    assert "didn't match" in response.content.decode()


def test_a_user_outside_the_raters_group_is_refused(client, password):
    UserFactory(username="visitor")
    client.login(request=HttpRequest(), username="visitor", password=password)
    assert client.get("/").status_code == 403


def test_a_rater_never_reaches_the_admin(client, rater, password):
    client.login(request=HttpRequest(), username="rater", password=password)
    response = client.get("/admin/labeling/judgement/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_a_rater_sees_only_their_own_judgements_and_staff_see_all(rater, other_rater, staff, make_task):
    task = make_task(k=2)
    mine = services.judgement_create(task=task, rater=rater, ranking=[task.response_ids()], client_submission_id="m")
    theirs = services.judgement_create(
        task=task, rater=other_rater, ranking=[task.response_ids()], client_submission_id="t"
    )
    assert list(judgements_visible_to(rater)) == [mine]
    assert list(judgements_visible_to(other_rater)) == [theirs]
    assert set(judgements_visible_to(staff)) == set(Judgement.objects.all()) == {mine, theirs}


def test_staff_see_every_project_and_a_link_to_the_admin(client, staff, project, password):
    other = ProjectFactory(name="Unassigned project")
    client.login(request=HttpRequest(), username="boss", password=password)
    page = client.get("/").content.decode()
    assert project.name in page and other.name in page
    assert 'href="/admin/"' in page


def test_logout_ends_the_session(client, rater, password):
    client.login(request=HttpRequest(), username="rater", password=password)
    assert client.post(reverse("frontend:logout")).status_code == 302
    assert client.get("/").status_code == 302


def test_the_health_check_answers_when_the_database_does(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_the_workbench_opens_for_members_only(client, rater, project, password):
    client.login(request=HttpRequest(), username="rater", password=password)
    assert client.get(f"/p/{project.slug}/").status_code == 200
    assert client.get(f"/p/{ProjectFactory().slug}/").status_code == 404


def test_the_workbench_shows_the_guidelines_sanitised(client, rater, project, password):
    project.guidelines = "# Rules\n\nBe **kind**. <script>alert(1)</script>"
    project.save()
    client.login(request=HttpRequest(), username="rater", password=password)
    page = client.get(f"/p/{project.slug}/").content.decode()
    assert "<h1>Rules</h1>" in page and "<strong>kind</strong>" in page
    assert "<script>alert(1)" not in page


def test_the_demonstration_page_needs_the_project_to_collect_them(client, rater, project, password):
    client.login(request=HttpRequest(), username="rater", password=password)
    assert client.get(f"/p/{project.slug}/demonstrate/").status_code == 404
    project.demonstrate_enabled = True
    project.save()
    assert client.get(f"/p/{project.slug}/demonstrate/").status_code == 200
