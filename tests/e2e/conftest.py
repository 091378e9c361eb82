"""End-to-end tests: Debian's Chromium driven by Playwright against the live app (pytest-django's
live_server). Screenshots go to test-output/e2e/<test>/ (TEST_OUTPUT_DIR overrides the folder)."""

import os
import re
import shutil
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make between browser
# steps are ordinary blocking calls, which Django allows with this flag.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from playwright.sync_api import sync_playwright  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is not installed: `make test` installs Debian's chromium package, or set CHROMIUM_PATH.")
    return path


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def output_dir(request) -> Path:
    base = Path(os.environ.get("TEST_OUTPUT_DIR", ROOT / "test-output")) / "e2e"
    folder = base / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


class Session:
    """A page plus what the test needs to watch: dialogs, script errors, screenshots."""

    def __init__(self, page, base_url: str, output_dir: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.output_dir = output_dir
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.csp_violations: list[str] = []  # what the Content-Security-Policy refused, as Chromium reports it
        self.shots = 0
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._on_console)

    def _on_console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(f"{self.page.url}: {message.text[:160]}")

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    def shot(self, name: str, full_page: bool = True) -> Path:
        """A screenshot of the whole page, or of the window alone (what the rater sees) with full_page=False."""
        self.shots += 1
        path = self.output_dir / f"{self.shots:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def log_in(self, username: str, password: str) -> None:
        """Type the credentials and press Enter, as a rater would."""
        self.goto("/login/")
        self.shot("login")
        self.page.keyboard.type(username)  # the username field has the focus
        self.page.keyboard.press("Tab")
        self.page.keyboard.type(password)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url(self.base_url + "/")


@pytest.fixture
def viewport() -> dict:
    """The browser window's size; a test parametrizes `viewport` to run at other sizes."""
    return {"width": 1280, "height": 900}


def _session(browser, live_server, output_dir, viewport, bypass_csp: bool):
    context = browser.new_context(viewport=viewport, bypass_csp=bypass_csp)
    page = context.new_page()
    page.set_default_timeout(15000)
    return context, Session(page, live_server.url, output_dir)


@pytest.fixture
def session(browser, live_server, output_dir, viewport):
    """A page for tests that wait on conditions written in JavaScript (``wait_for_function`` compiles them,
    which the pages' Content-Security-Policy forbids): the policy is bypassed; ``strict_session`` keeps it."""
    context, session = _session(browser, live_server, output_dir, viewport, bypass_csp=True)
    yield session
    context.close()


@pytest.fixture
def strict_session(browser, live_server, output_dir, viewport):
    """A page under the pages' own Content-Security-Policy, as a rater's browser sees them."""
    context, session = _session(browser, live_server, output_dir, viewport, bypass_csp=False)
    yield session
    context.close()
