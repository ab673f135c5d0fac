"""The UI in a real browser: Debian's Chromium driven by Playwright against a uvicorn server.

Locally these tests skip when `/usr/bin/chromium` or the `playwright` package is missing; in CI
(`CI` set) that is a failure, so the browser half can never silently vanish. Playwright's own
browser downloads are never used (`executable_path` points at the system Chromium).

`UPDATE_SCREENSHOTS=1` also writes the screenshots of the main pages into `docs/screenshots/`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, running_chromium  # noqa: F401 (test_offline_browser's)
from tests.browser import missing as _missing  # noqa: F401
from tests.browser import require as require_browser
from tests.registry.ui_server import FACILITY, PASSWORD
from tests.uvicorn_server import serve

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
DEMO_VACCINATORS = json.loads((ROOT / "registry" / "demo" / "vaccinator.json").read_text())

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A uvicorn server with the UI and the demo data on SQLite; yields its base URL."""
    require_browser()
    tmp = tmp_path_factory.mktemp("ui-server")
    env = {**os.environ, "REGISTRY_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(ROOT)}
    env.pop("REGISTRY_DATABASE_URL", None)
    with serve("tests.registry.ui_server:build", tmp, env, timeout=30) as base:
        yield base


class SignedIn:
    """A browser whose new contexts carry a session cookie (the tests below act as that user)."""

    def __init__(self, browser: Any, base: str, username: str):
        self._browser = browser
        self._base = base
        resp = httpx.post(
            f"{base}/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        resp.raise_for_status()
        self._cookie = resp.cookies["registry_session"]

    def new_context(self, **kw: Any) -> Any:
        context = self._browser.new_context(**kw)
        context.add_cookies(
            [{"name": "registry_session", "value": self._cookie, "url": self._base}]
        )
        return context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._browser, name)


@pytest.fixture(scope="module")
def chromium(server: str) -> Iterator[Any]:
    with running_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def browser(chromium: Any, server: str) -> Any:
    """Chromium signed in as a system-admin."""
    return SignedIn(chromium, server, "ui-admin")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, locale="en-GB")
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    yield pg
    context.close()


def shot(pg: Any, name: str, tmp_path: Path, *, full: bool = True) -> None:
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(folder / f"{name}.png"), full_page=full)


def test_create_fix_error_edit_and_find_a_facility(server: str, page: Any, tmp_path: Path):
    pg = page
    pg.goto(f"{server}/ui/")
    shot(pg, "home", tmp_path)
    pg.get_by_role("link", name="Facility").first.click()
    pg.get_by_role("link", name="New Facility").click()

    pg.get_by_label("Facility code").fill("BRW001")
    pg.get_by_label("Name", exact=False).first.fill("Browser Test Clinic")
    pg.get_by_label("Category").select_option("PRIVATE")
    pg.get_by_label("Type of facility").select_option("Mobile")
    pg.get_by_label("Status").first.select_option("Active")
    pg.locator("#f-address-addressLine1").fill("9 Lake Road")
    pg.locator("#f-address-district").fill("Lakeside")
    pg.locator("#f-address-state").fill("Northland")
    pg.locator("#f-address-pincode").fill("56009")
    pg.get_by_label("Contact number").fill("call me")  # not a phone number
    pg.get_by_role("button", name="Add Administrator").click()  # added in the page by ui.js
    pg.locator("#f-admins-0-name").fill("Ravi Kumar")
    pg.locator("#f-admins-0-mobile").fill("+91 90000 00001")
    pg.get_by_role("button", name="Save", exact=True).click()

    error = pg.locator("#f-contact-err1")
    error.wait_for()
    assert "phone" in error.inner_text()
    assert pg.get_by_label("Contact number").input_value() == "call me"
    assert pg.locator("#f-admins-0-name").input_value() == "Ravi Kumar"
    assert pg.locator("#f-contact").get_attribute("aria-invalid") == "true"
    shot(pg, "form-error", tmp_path)

    pg.get_by_label("Contact number").fill("+91 98000 12345")
    pg.get_by_role("button", name="Save", exact=True).click()
    pg.get_by_role("status").filter(has_text="Created.").wait_for()
    assert pg.get_by_role("heading", level=1).inner_text() == "Browser Test Clinic"
    assert "Ravi Kumar" in pg.content()
    shot(pg, "detail", tmp_path)

    pg.get_by_role("link", name="Edit").click()
    assert pg.get_by_label("Facility code").input_value() == "BRW001"
    pg.get_by_label("Name", exact=False).first.fill("Browser Test Health Centre")
    shot(pg, "edit", tmp_path)
    pg.get_by_role("button", name="Save", exact=True).click()
    pg.get_by_role("status").filter(has_text="Saved.").wait_for()
    assert pg.get_by_role("heading", level=1).inner_text() == "Browser Test Health Centre"

    pg.goto(f"{server}/ui/facility")
    pg.get_by_label("Name contains").fill("Health Centre")
    pg.get_by_label("Category").select_option("PRIVATE")
    pg.get_by_role("button", name="Apply").click()
    pg.wait_for_url("**/ui/facility?*")
    link = pg.get_by_role("link", name="Browser Test Health Centre")
    link.wait_for()
    assert pg.locator("tbody tr").count() == 1
    shot(pg, "list-filtered", tmp_path)
    link.click()
    assert "BRW001" in pg.content()


def test_keyboard_only_form_and_phone_sized_list(server: str, browser: Any, tmp_path: Path):
    context = browser.new_context(
        viewport={"width": 360, "height": 740},
        locale="hi-IN",
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    pg = context.new_page()
    try:
        pg.goto(f"{server}/ui/facility")
        assert pg.locator("html").get_attribute("lang") == "hi"
        # nothing wider than the screen except the scrollable table
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 360
        shot(pg, "list-phone-hi", tmp_path)
        pg.goto(f"{server}/ui/vaccine/new?lang=en")
        pg.keyboard.press("Tab")  # skip link first
        assert pg.evaluate("document.activeElement.textContent") == "Skip to content"
        pg.locator("#f-code").focus()
        pg.keyboard.type("KB-1")
        pg.keyboard.press("Tab")
        pg.keyboard.type("Keyboard vaccine")
        assert pg.evaluate("document.activeElement.id") == "f-name"
        shot(pg, "form-phone", tmp_path, full=False)
    finally:
        context.close()


def test_rows_are_added_and_removed_without_javascript(server: str, browser: Any):
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    try:
        pg.goto(f"{server}/ui/vaccine/new")
        pg.get_by_role("button", name="Add Interval").click()
        pg.locator("#f-doseIntervals-0-min").fill("28")
        pg.get_by_role("button", name="Add Interval").click()
        assert pg.locator("#f-doseIntervals-0-min").input_value() == "28"
        assert pg.locator("#f-doseIntervals-1-min").count() == 1
        pg.get_by_role("button", name="Remove Interval 2").click()
        assert pg.locator("#f-doseIntervals-1-min").count() == 0
    finally:
        context.close()


# -- the schema editor -------------------------------------------------------------------------
def test_a_field_added_in_the_schema_editor_is_filled_in_a_record(
    server: str, page: Any, tmp_path: Path
):
    pg = page
    pg.goto(f"{server}/ui/")
    pg.get_by_role("link", name="Schemas").click()
    pg.get_by_role("link", name="Vaccine", exact=True).click()
    pg.get_by_role("link", name="Add a field").click()
    pg.get_by_label("Field name").fill("storage")
    pg.get_by_label("Label", exact=True).fill("Storage")
    pg.get_by_label("Help text").fill("How the vials are kept.")
    pg.get_by_label("Type", exact=True).select_option("string")
    pg.get_by_label("Allowed values").fill("2-8 C\nfrozen")
    pg.get_by_label("Searchable").check()
    shot(pg, "schema-editor", tmp_path)
    pg.get_by_role("button", name="Preview the change").click()

    plan = pg.locator("table.plan")
    plan.wait_for()
    assert "add column" in plan.inner_text() and "storage" in plan.inner_text()
    assert pg.locator("pre.diff .add").count() > 0
    shot(pg, "schema-preview", tmp_path)
    pg.get_by_role("button", name="Confirm and apply").click()
    pg.get_by_role("status").filter(has_text="Schema saved").wait_for()
    assert "storage" in pg.locator("table").first.inner_text()

    pg.goto(f"{server}/ui/vaccine/new")
    pg.get_by_label("Vaccine code").fill("STORE-1")
    pg.get_by_label("Name", exact=False).first.fill("Storable vaccine")
    pg.get_by_label("Manufacturer").fill("Cold Labs")
    pg.get_by_label("Status").select_option("Active")
    pg.get_by_label("Storage").select_option("frozen")
    pg.get_by_role("button", name="Save", exact=True).click()
    pg.get_by_role("status").filter(has_text="Created.").wait_for()
    detail = pg.locator("main dl").first.inner_text()
    assert "Storage" in detail and "frozen" in detail


def test_the_json_editor_checks_as_you_type(server: str, page: Any):
    pg = page
    pg.goto(f"{server}/ui/schemas/program/json")
    box = pg.get_by_label("Schema of program")
    status = pg.locator("#s-schema-status")
    original = box.input_value()
    box.fill('{"type": "object",')
    status.filter(has_text="Not valid JSON").wait_for()  # (no eval: the pages' CSP forbids it)
    assert "Not valid JSON" in status.inner_text()
    box.fill('{"type": "object", "properties": {"a": {"type": "string"}}, "x-registry": {"x": 1}}')
    status.filter(has_text="/x-registry/x").wait_for()
    assert box.get_attribute("aria-invalid") == "true"
    box.fill(original)
    status.filter(has_text="No problems found.").wait_for()
    assert box.get_attribute("aria-invalid") == "false"


def test_a_new_entity_is_created_found_edited_and_deleted_without_a_file(server: str, page: Any):
    pg = page
    pg.goto(f"{server}/ui/schemas")
    pg.get_by_role("link", name="Add a registry").click()
    pg.get_by_label("Name in addresses").fill("coldBox")
    pg.get_by_label("Title", exact=True).fill("Cold box")
    pg.get_by_label("Searchable").check()
    pg.get_by_role("button", name="Preview the change").click()
    assert "create table" in pg.locator("table.plan").inner_text()
    pg.get_by_role("button", name="Confirm and apply").click()
    pg.get_by_role("status").filter(has_text="Schema saved").wait_for()

    pg.goto(f"{server}/ui/")
    pg.get_by_role("link", name="Cold box").click()
    pg.get_by_role("link", name="New Cold box").click()
    pg.get_by_label("Name").fill("Box A")
    pg.get_by_role("button", name="Save", exact=True).click()
    pg.get_by_role("status").filter(has_text="Created.").wait_for()
    pg.get_by_role("link", name="Edit").click()
    pg.get_by_label("Name").fill("Box B")
    pg.get_by_role("button", name="Save", exact=True).click()
    pg.get_by_role("status").filter(has_text="Saved.").wait_for()
    assert pg.get_by_role("heading", level=1).inner_text() == "Box B"

    pg.goto(f"{server}/ui/coldBox")
    pg.get_by_label("Name contains").fill("Box B")
    pg.get_by_role("button", name="Apply").click()
    pg.wait_for_url("**/ui/coldBox?*")
    pg.get_by_role("link", name="Box B").click()
    pg.get_by_role("link", name="Delete").click()
    pg.get_by_role("button", name="Yes, delete").click()
    pg.get_by_role("status").filter(has_text="Deleted.").wait_for()
    assert pg.locator("tbody").inner_text().strip() == "No records match."


def test_schema_pages_fit_a_phone_and_work_with_the_keyboard(server: str, browser: Any):
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    pg = context.new_page()
    try:
        for path in ("/ui/schemas", "/ui/schemas/facility", "/ui/schemas/facility/fields/new"):
            pg.goto(f"{server}{path}")
            assert pg.evaluate("document.documentElement.scrollWidth") <= 360, path
        pg.locator("#s-name").focus()
        pg.keyboard.type("beds")
        for _ in range(3):  # label, help text, then the type
            pg.keyboard.press("Tab")
        assert pg.evaluate("document.activeElement.id") == "s-type"
        pg.keyboard.press("Shift+Tab")
        pg.keyboard.press("Shift+Tab")
        assert pg.evaluate("document.activeElement.id") == "s-title"
        pg.keyboard.type("Beds")
        pg.keyboard.press("Enter")  # submits the form through its first button: Preview
        pg.locator("table.plan").wait_for()
        assert "beds" in pg.locator("table.plan").inner_text()
    finally:
        context.close()


def test_sign_in_page_and_a_staff_member_sees_only_what_the_role_may_do(
    server: str, chromium: Any, tmp_path: Path
):
    context = chromium.new_context(viewport={"width": 1100, "height": 900}, locale="en-GB")
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    try:
        pg.goto(f"{server}/ui/")
        links = [a.inner_text() for a in pg.locator("ul.entities a").all()]
        assert "Recipient" not in links and "Facility" in links  # anonymous: public only
        pg.goto(f"{server}/ui/recipient")  # not public: the sign-in page, then back here
        assert "/ui/login" in pg.url
        pg.get_by_label("Username").fill("ui-staff")
        pg.get_by_label("Password").fill("wrong password")
        pg.get_by_role("button", name="Sign in").first.click()
        assert pg.get_by_role("alert").inner_text().startswith("Sign-in failed")
        pg.get_by_label("Username").fill("ui-staff")
        pg.get_by_label("Password").fill(PASSWORD)
        pg.get_by_role("button", name="Sign in").first.click()
        pg.wait_for_url(f"{server}/ui/recipient")
        assert "Signed in as ui-staff" in pg.locator("header").inner_text()
        shot(pg, "recipients-as-staff", tmp_path)
        pg.locator("table tbody a").first.click()  # staff may read and edit, not delete
        pg.wait_for_url(f"{server}/ui/recipient/*")  # count() does not wait for the new page
        assert pg.get_by_role("link", name="Edit").count() == 1
        assert pg.get_by_role("link", name="Delete").count() == 0
        assert "Identity" not in pg.locator("main").inner_text()  # private: not shown
        pg.goto(f"{server}/ui/")
        assert pg.get_by_role("link", name="Schemas").count() == 0  # the editor: admins
        links = [a.inner_text() for a in pg.locator("ul.entities a").all()]
        assert "Recipient" in links and "Vaccinator" in links
        pg.goto(f"{server}/ui/vaccinator")  # only their facility's vaccinators are listed
        rows = pg.locator("table tbody tr").count()
        mine = [v for v in DEMO_VACCINATORS if FACILITY in v["facilityIds"]]
        assert 0 < rows == len(mine) < len(DEMO_VACCINATORS)
        pg.get_by_role("button", name="Sign out").click()
        assert "Sign in" in pg.locator("header").inner_text()
    finally:
        context.close()


def _luminance(css_colour: str) -> float:
    """WCAG relative luminance of an `rgb(...)`/`rgba(...)` computed colour."""
    r, g, b = (int(float(v)) / 255 for v in css_colour.split("(")[1].split(")")[0].split(",")[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_header_sign_in_button_is_readable(server: str, chromium: Any):
    context = chromium.new_context(viewport={"width": 360, "height": 700})
    pg = context.new_page()
    try:
        pg.goto(f"{server}/ui/")
        link = pg.locator("header .account a.button")
        assert link.inner_text() == "Sign in"
        fg, bg = link.evaluate(
            "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
        )
        light, dark = sorted((_luminance(fg), _luminance(bg)), reverse=True)
        assert (light + 0.05) / (dark + 0.05) >= 4.5, (fg, bg)  # WCAG AA for its text
    finally:
        context.close()
