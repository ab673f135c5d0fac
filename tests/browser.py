"""Chromium for the browser tests: Debian's `/usr/bin/chromium` driven by Playwright (never a
browser Playwright downloads).

Locally the browser tests skip when Chromium or the `playwright` package is missing; in CI (`CI`
set) that is a failure, so the browser half can never silently vanish. A module starts one
browser for its tests (`running_chromium`, in a module-scoped fixture) and makes a context per
test; `launch` starts another from the same Playwright (other switches: a fake camera).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


def require() -> None:
    """Skip the test (fail it in CI) when the browser tests cannot run here."""
    problem = missing()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests are required in CI: {problem}")
        pytest.skip(problem)


def launch(playwright: Any, *switches: str) -> Any:
    """A headless Chromium with the tests' switches and `switches`; the caller closes it."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *switches], headless=True
    )


@contextlib.contextmanager
def running_chromium(*switches: str) -> Iterator[Any]:
    """Playwright and a headless Chromium (`launch`) for as long as the block runs; skips the
    test (fails it in CI) when the browser tests cannot run here."""
    require()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p, *switches)
        try:
            yield browser
        finally:
            browser.close()
