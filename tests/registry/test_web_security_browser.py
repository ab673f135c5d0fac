"""The pages under their Content-Security-Policy in a real browser (the UI tests' setup: Debian's
Chromium driven by Playwright against a uvicorn server): no page, its scripts, its styles or
Swagger UI trips the policy; the forms, the JavaScript row buttons and the schema check still
work; and another site can neither frame a page nor sign its visitor out with a form."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import running_chromium
from tests.registry import test_ui_browser
from tests.registry.ui_server import PASSWORD

pytestmark = pytest.mark.browser

#: every violation the page reports, through the DOM event (the init script runs outside the CSP)
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""
EVIL = "http://evil.test"


#: the UI tests' server (demo data on SQLite), started once for this module too
server = test_ui_browser.server


@pytest.fixture(scope="module")
def chromium(server: str) -> Iterator[Any]:
    with running_chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1100, "height": 900}, locale="en-GB")
    context.add_init_script(RECORD_VIOLATIONS)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    console: list[str] = []
    pg.on("console", lambda m: console.append(m.text))
    pg.console_messages = console  # type: ignore[attr-defined]
    yield pg
    context.close()


def violations(pg: Any) -> list[str]:
    found = list(pg.evaluate("window.__csp || []"))
    found += [m for m in pg.console_messages if "Content Security Policy" in m]
    return found


def sign_in(pg: Any, server: str) -> None:
    """Through the sign-in form: a real browser's form post (Origin, Referrer-Policy)."""
    pg.goto(f"{server}/ui/login")
    pg.get_by_label("Username").fill("ui-admin")
    pg.get_by_label("Password").fill(PASSWORD)
    pg.get_by_role("button", name="Sign in").first.click()
    pg.wait_for_url(f"{server}/ui/")
    assert "Signed in as ui-admin" in pg.locator("header").inner_text()


def test_the_pages_work_under_their_policy(server: str, page: Any):
    pg = page
    sign_in(pg, server)
    resp = pg.goto(f"{server}/ui/")
    assert resp.headers["content-security-policy"].startswith("default-src 'self'")
    assert resp.headers["x-frame-options"] == "DENY"

    # ui.js (a same-origin script) adds a row in the page; the form posts and saves
    pg.goto(f"{server}/ui/vaccine/new")
    pg.get_by_label("Vaccine code").fill("CSP-1")
    pg.get_by_label("Name", exact=False).first.fill("Policy vaccine")
    pg.get_by_label("Manufacturer").fill("Header Labs")
    pg.get_by_label("Status").select_option("Active")
    pg.get_by_role("button", name="Add Interval").click()
    assert pg.locator("#f-doseIntervals-0-min").count() == 1  # no round trip: ui.js ran
    pg.locator("#f-doseIntervals-0-min").fill("28")
    pg.get_by_role("button", name="Save", exact=True).click()
    pg.get_by_role("status").filter(has_text="Created.").wait_for()
    # the style sheet applies (it is the only source of styles)
    skip = pg.locator("a.skip")
    assert skip.evaluate("a => getComputedStyle(a).position") == "absolute"

    # schemas.js checks the JSON with a same-origin fetch (a POST: Origin is sent)
    pg.goto(f"{server}/ui/schemas/program/json")
    box = pg.get_by_label("Schema of program")
    original = box.input_value()
    box.fill('{"type": "object",')
    # (not `wait_for_function`: Playwright evaluates its string with eval(), which the
    # policy forbids in the page as it should)
    pg.locator("#s-schema-status").filter(has_text="Not valid JSON").wait_for()
    box.fill(original)
    pg.locator("#s-schema-status").filter(has_text="No problems found.").wait_for()

    for path in ("/ui/facility", "/ui/users", "/ui/schemas", "/ui/schemas/vaccine", "/ui/x"):
        pg.goto(f"{server}{path}")
    pg.get_by_role("button", name="Sign out").click()
    pg.wait_for_url(f"{server}/ui/")
    assert "Sign in" in pg.locator("header").inner_text()
    assert violations(pg) == []


def test_swagger_ui_runs_under_its_policy(server: str, page: Any):
    pg = page
    resp = pg.goto(f"{server}/docs")
    assert "'sha256-" in resp.headers["content-security-policy"]
    # its inline script ran, fetched the spec and rendered it (the spec is large: be patient)
    pg.locator(".swagger-ui .info .title").wait_for(timeout=60_000)
    assert pg.locator(".opblock").count() > 10
    assert violations(pg) == []


def test_another_site_can_neither_frame_a_page_nor_sign_its_visitor_out(server: str, page: Any):
    pg = page
    sign_in(pg, server)
    served: list[str] = []

    def evil(route: Any) -> None:
        served.append(route.request.url)
        route.fulfill(
            content_type="text/html",
            body=f"""<!doctype html><title>evil</title>
<iframe id="f" src="{server}/ui/"></iframe>
<form id="p" method="post" action="{server}/ui/logout"></form>""",
        )

    pg.route(f"{EVIL}/**", evil)
    pg.goto(f"{EVIL}/")
    assert served
    pg.wait_for_load_state("load")
    (child,) = pg.main_frame.child_frames
    # frame-ancestors 'none' (and X-Frame-Options): Chromium shows its error page instead
    assert child.url.startswith("chrome-error://")
    assert child.locator("header").count() == 0
    with pg.expect_navigation(url=f"{server}/ui/logout") as posted:
        pg.evaluate("document.getElementById('p').submit()")
    assert posted.value is not None and posted.value.status == 403
    pg.goto(f"{server}/ui/")
    assert "Signed in as ui-admin" in pg.locator("header").inner_text()  # still signed in
