"""Headless Chromium (Debian's chromium and chromium-driver, driven by Selenium) against a live server
that also serves the admin's static files, and real kojo_server processes from the server tests."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.test.testcases import LiveServerThread
from pytest_django.live_server_helper import LiveServer

from tests.server.conftest import ROOT, start_server, wait_for  # noqa: F401 - fixtures shared with tests/server

CHROMIUM = os.environ.get("KOJO_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("KOJO_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("KOJO_TEST_ARTIFACTS", ROOT / "artifacts")) / "screenshots"


def missing_browser() -> list[str]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (the test extra)")
    return missing


@pytest.fixture(scope="session")
def live_server(request):
    """pytest-django's live server, but serving the admin's CSS and JavaScript from the apps' static
    directories (``django.contrib.staticfiles`` is not installed in the test settings), so the browser
    sees the admin as an operator does."""
    server = LiveServer("localhost", start=False)
    server.thread = LiveServerThread("localhost", static_handler=StaticFilesHandler, connections_override={})
    server.thread.daemon = True
    server.start()
    yield server
    server.stop()


@pytest.fixture
def browser(request):
    """A headless Chromium. Missing locally: the test is skipped, saying why. Missing in CI (CI is set):
    the test fails, so a broken install never passes as a skip."""
    missing = missing_browser()
    if missing:
        reason = f"headless Chromium is not available: missing {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (.ci/run installs chromium and chromium-driver)")
        pytest.skip(f"{reason}; apt-get install chromium chromium-driver to run the browser tests")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def screenshot(request, browser):
    """``screenshot("name")`` saves the page to artifacts/screenshots/<test>-<n>-<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    prefix = re.sub(r"\W+", "_", request.node.name)
    taken = []

    def take(name: str) -> Path:
        path = SCREENSHOTS / f"{prefix}-{len(taken) + 1:02d}-{name}.png"
        browser.save_screenshot(str(path))
        taken.append(path)
        return path

    yield take
    call = getattr(request.node, "rep_call", None)
    if call is not None and call.failed:
        take("failure")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
