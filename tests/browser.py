"""A real browser for the page tests: Debian's chromium, driven through its chromedriver.

Both come from the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs
them), at their Debian paths, never looked up on PATH: a chromedriver elsewhere may not match
the browser's version. When they are missing the tests skip with the reason, except under
``CI=true``, where they fail: CI installs them, so their absence there is a broken setup.

Use it with ``from tests.browser import browser`` in a test module (pytest finds the
fixture there); ``screenshot(driver, name)`` saves ``tests/artifacts/<name>.png``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

__all__ = ["ARTIFACTS", "CHROMEDRIVER", "CHROMIUM", "browser", "screenshot", "wait_for"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: screenshots of the pages the tests saw (gitignored; CI keeps them as artifacts)
ARTIFACTS = Path(__file__).parent / "artifacts"
#: seconds a page may take to show what a test waits for
PAGE_WAIT = 30.0

T = TypeVar("T")


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: apt-get install chromium chromium-driver (.ci/run does)"
    try:
        import selenium  # noqa: F401
    except ModuleNotFoundError:
        return "selenium is missing: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    """Headless chromium for the session; skips (fails under CI=true) when it cannot run."""
    reason = missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run under CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.TemporaryDirectory(prefix="taskbus-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", f"--user-data-dir={profile.name}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save what ``driver`` shows as ``tests/artifacts/<name>.png``; its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for(check: Callable[[], T | None], what: str, timeout: float = PAGE_WAIT) -> T:
    """Call ``check`` until it returns something truthy (reloading is the caller's), then
    return it; fail naming ``what`` after ``timeout`` seconds. The wait ends as soon as the
    page shows it: no fixed sleep decides the outcome."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"the page never showed {what} within {timeout:g}s (last: {last!r})")
