"""Password guessing is stopped: after ten failed logins in a row for one account, or from one address, that
account or address is refused (429) for a cool-off time, on the rater login and the admin's; an admin lifts the
lockout by deleting the access attempt in the admin."""

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.urls import reverse

from tests.factories import PASSWORD, UserFactory

LIMIT = 10


@pytest.mark.parametrize("login_url", ["/login/", "/admin/login/"])
def test_ten_wrong_passwords_lock_the_account_until_an_admin_lifts_it(db, settings, login_url):
    settings.AXES_FAILURE_LIMIT = LIMIT
    user = UserFactory(username="target", rater=True, is_staff=login_url.startswith("/admin"))
    guesser = Client(REMOTE_ADDR="203.0.113.7")
    for attempt in range(LIMIT - 1):
        response = guesser.post(login_url, {"username": "target", "password": f"guess-{attempt}"})
        assert response.status_code == 200  # the form again, with its error
    assert guesser.post(login_url, {"username": "target", "password": "last-guess"}).status_code == 429
    # Locked: the right password from another address is refused too, for this account.
    owner = Client(REMOTE_ADDR="198.51.100.2")
    assert owner.post(login_url, {"username": "target", "password": PASSWORD}).status_code == 429

    admin = UserFactory(username="boss", is_staff=True, is_superuser=True)
    staff = Client(REMOTE_ADDR="192.0.2.1")
    staff.force_login(admin)
    attempts = list(AccessAttempt.objects.filter(username="target").values_list("pk", flat=True))
    page = staff.post(
        reverse("admin:axes_accessattempt_changelist"),
        {"action": "delete_selected", "_selected_action": attempts, "post": "yes"},
    )
    assert page.status_code == 302 and not AccessAttempt.objects.filter(username="target").exists()
    assert owner.post(login_url, {"username": "target", "password": PASSWORD}).status_code == 302
    assert owner.session["_auth_user_id"] == str(user.pk)


def test_ten_failures_from_one_address_lock_that_address_whatever_the_accounts(db, settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    UserFactory(username="victim", rater=True)
    sprayer = Client(REMOTE_ADDR="203.0.113.9")
    for number in range(LIMIT):
        sprayer.post("/login/", {"username": f"someone-{number}", "password": "Password1"})
    assert sprayer.post("/login/", {"username": "victim", "password": PASSWORD}).status_code == 429
    assert (
        Client(REMOTE_ADDR="198.51.100.3").post("/login/", {"username": "victim", "password": PASSWORD}).status_code
        == 302
    )


def test_a_success_resets_the_count(db, settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    UserFactory(username="forgetful", rater=True)
    client = Client(REMOTE_ADDR="198.51.100.4")
    for _ in range(2):
        for attempt in range(LIMIT - 1):
            client.post("/login/", {"username": "forgetful", "password": f"wrong-{attempt}"})
        assert client.post("/login/", {"username": "forgetful", "password": PASSWORD}).status_code == 302
        client.logout()
