"""The dashboard in Chromium (the UI tests' setup: Debian's Chromium driven by Playwright
against a uvicorn server), over the demo data and one simulated day: the totals, the SVG charts
(also with JavaScript off), a CSV download, the period form, and a phone-sized screen.
`UPDATE_SCREENSHOTS=1` writes docs/screenshots/dashboard*.png."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import require as require_browser
from tests.browser import running_chromium
from tests.plugins.programme.dashboard_server import PASSWORD
from tests.registry.test_ui_browser import ROOT
from tests.uvicorn_server import serve

pytestmark = pytest.mark.browser
SCREENSHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    require_browser()
    tmp = tmp_path_factory.mktemp("dashboard-server")
    data = tmp / "data"
    env = {
        **os.environ,
        "REGISTRY_DATA_DIR": str(data),
        "PYTHONPATH": str(ROOT),
        "REGISTRY_OTP_SIGNUP": "true",  # people sign up with a code (the enrolment test)
        "REGISTRY_NOTIFICATION_SENDER": "console",  # the code lands in the server's log
    }
    env.pop("REGISTRY_DATABASE_URL", None)
    with serve("tests.plugins.programme.dashboard_server:build", tmp, env, timeout=60) as base:
        expected = json.loads((data / "expected.json").read_text())
        expected["_log"] = str(tmp / "server.log")
        yield base, expected


@pytest.fixture(scope="module")
def chromium(server: Any) -> Iterator[Any]:
    with running_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def browser(chromium: Any, server: Any) -> Any:
    """Chromium whose new contexts are signed in as `dash-monitor` (monitoring)."""
    base, _ = server
    resp = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "dash-monitor", "password": PASSWORD}
    )
    resp.raise_for_status()
    cookie = resp.cookies["registry_session"]

    class SignedIn:
        def new_context(self, **kw: Any) -> Any:
            context = chromium.new_context(**kw)
            context.add_cookies([{"name": "registry_session", "value": cookie, "url": base}])
            return context

    return SignedIn()


def shot(pg: Any, name: str, tmp_path: Path) -> None:
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_the_dashboard_shows_the_day(server: Any, browser: Any, tmp_path: Path):
    base, expected = server
    context = browser.new_context(
        viewport={"width": 1200, "height": 900}, locale="en-GB", accept_downloads=True
    )
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    try:
        pg.goto(f"{base}/ui/dashboard")
        assert pg.get_by_role("heading", level=1).inner_text() == "Programme dashboard"
        for name, value in expected["totals"].items():
            assert pg.locator(f'[data-total="{name}"]').inner_text() == str(value), name
        charts = pg.get_by_role("img")
        assert charts.count() == 7
        daily = pg.get_by_role("img", name="Vaccinations per day")
        assert daily.locator("rect").count() >= 30  # one column per day of the period
        box = daily.bounding_box()
        assert box is not None and box["width"] > 500 and box["height"] > 150
        states = pg.locator("section#places table").first
        assert "Northland" in states.inner_text() and "Eastmarch" in states.inner_text()
        shot(pg, "dashboard", tmp_path)

        with pg.expect_download() as download:
            pg.get_by_role("link", name="Download vaccinations by state (CSV)").click()
        text = Path(download.value.path()).read_text()
        assert text.splitlines()[0] == "state,vaccinations"
        assert "Northland,4" in text and "Eastmarch,2" in text

        # the period form: one day, one programme
        pg.get_by_label("From", exact=True).fill(expected["today"])
        pg.get_by_label("Programme", exact=True).select_option("COVID19-2026")
        pg.get_by_role("button", name="Show").click()
        pg.wait_for_url("**/ui/dashboard?*")
        assert pg.locator('[data-total="vaccinations"]').inner_text() == "6"
        assert pg.get_by_role("img", name="Vaccinations per day").locator("rect").count() == 1
        shot(pg, "dashboard-one-day", tmp_path)
    finally:
        context.close()


def test_the_dashboard_reads_without_javascript_and_on_a_phone(
    server: Any, browser: Any, tmp_path: Path
):
    base, expected = server
    context = browser.new_context(
        viewport={"width": 360, "height": 740},
        is_mobile=True,
        device_scale_factor=2,
        java_script_enabled=False,
    )
    pg = context.new_page()
    try:
        pg.goto(f"{base}/ui/dashboard")
        serious = expected["totals"]["serious"]
        assert pg.locator('[data-total="serious"]').inner_text() == str(serious)
        assert pg.get_by_role("img").count() == 7
        width = pg.locator("main").evaluate("m => m.scrollWidth")
        assert width <= 360
        shot(pg, "dashboard-phone", tmp_path)
    finally:
        context.close()


def test_the_dashboard_asks_to_sign_in_and_is_for_monitoring(
    server: Any, chromium: Any, tmp_path: Path
):
    base, expected = server
    context = chromium.new_context(viewport={"width": 1100, "height": 900}, locale="en-GB")
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    try:
        pg.goto(f"{base}/ui/dashboard")
        assert "/ui/login" in pg.url
        pg.get_by_label("Username").fill("dash-staff")
        pg.get_by_label("Password").fill(PASSWORD)
        pg.get_by_role("button", name="Sign in").first.click()
        pg.wait_for_url(f"{base}/ui/dashboard")
        assert "monitoring role" in pg.locator("main").inner_text()  # staff: not for them
        context.clear_cookies()
        pg.goto(f"{base}/ui/dashboard")
        pg.get_by_label("Username").fill("dash-monitor")
        pg.get_by_label("Password").fill(PASSWORD)
        pg.get_by_role("button", name="Sign in").first.click()
        pg.wait_for_url(f"{base}/ui/dashboard")
        total = pg.locator('[data-total="vaccinations"]').inner_text()
        assert total == str(expected["totals"]["vaccinations"])
    finally:
        context.close()


def _code_sent_to(log: Path, digits: str) -> str:
    """The sign-in code the console sender printed for `digits` (waits for it briefly)."""
    for _ in range(50):
        pattern = rf"sms to {re.escape(digits)}: Your sign-in code is ([0-9]{{6}})"
        found = re.findall(pattern, log.read_text())
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError("no code was sent")


def test_a_person_signs_up_with_a_code_and_enrols(server: Any, chromium: Any, tmp_path: Path):
    """Self-enrolment end to end in the browser: /ui/enrol asks to sign in; the person asks for
    a code by SMS, types it, lands on the enrolment form, enrols with the number they signed in
    with, and ends on their own record's page."""
    base, expected = server
    context = chromium.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    phone = "+99 91234 56780"
    try:
        pg.goto(f"{base}/ui/enrol")
        pg.wait_for_url("**/ui/login?*")
        otp = pg.locator("form.login-otp")
        otp.get_by_label("Your mobile number or email").fill(phone)
        otp.get_by_role("button", name="Send me a code").click()
        code = _code_sent_to(Path(expected["_log"]), "+999123456780")
        pg.locator("form.login-otp").get_by_label("The 6-digit code").fill(code)
        pg.locator("form.login-otp").get_by_role("button", name="Sign in").click()
        pg.wait_for_url("**/ui/enrol")
        assert pg.get_by_role("heading", level=1).inner_text() == "Enrol for vaccination"
        form = pg.locator("form.record").last
        form.locator("#f-name").fill("Kavya Nair")
        form.locator("#f-identity").fill("did:example:national-id:55501234")
        form.locator("#f-dob").fill("1993-05-06")
        form.locator("#f-gender").select_option("Female")
        form.locator("#f-phone").fill(phone)
        shot(pg, "self-enrolment", tmp_path)
        form.get_by_role("button", name="Save").last.click()
        pg.wait_for_load_state()
        assert "/ui/recipient/" in pg.url, pg.locator("main").inner_text()
        assert "Kavya Nair" in pg.get_by_role("heading", level=1).inner_text()
        width = pg.locator("main").evaluate("m => m.scrollWidth")
        assert width <= 360
    finally:
        context.close()
