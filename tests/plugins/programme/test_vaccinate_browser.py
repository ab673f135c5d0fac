"""The facility's flow in a real browser (Debian's Chromium, Playwright), at desktop width and
at 360 px: a staff member signs in, finds a recipient by mobile number, records a dose choosing
only the batch, sees the certificate page ("being issued", then the certificate) and downloads
the PDF; the same in Hindi at 360 px; a facility admin revokes the certificate with a reason
and a confirmation, and `POST /api/v1/verify` says REVOKED.

Skips locally without Chromium or Playwright, fails in CI (as `tests/registry/test_ui_browser.py`).
`UPDATE_SCREENSHOTS=1` writes the pages' screenshots into `docs/screenshots/` (`task-*.png`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import require as require_browser
from tests.browser import running_chromium
from tests.plugins.certificates import test_verify_page_browser as verify_page
from tests.plugins.programme.vaccinate_server import ADMIN, STAFF
from tests.registry.test_ui_browser import SignedIn
from tests.uvicorn_server import serve

ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = ROOT / "docs" / "screenshots"
PEOPLE = json.loads((ROOT / "registry" / "demo" / "recipient.json").read_text())
DESKTOP = {"width": 1100, "height": 900}
PHONE = {"width": 360, "height": 740}

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_browser()
    tmp = tmp_path_factory.mktemp("vaccinate-server")
    env = {**os.environ, "REGISTRY_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(ROOT)}
    env.pop("REGISTRY_DATABASE_URL", None)
    with serve("tests.plugins.programme.vaccinate_server:build", tmp, env, timeout=30) as base:
        yield base


@pytest.fixture(scope="module")
def chromium(server: str) -> Iterator[Any]:
    with running_chromium() as browser:
        yield browser


def open_page(chromium: Any, server: str, user: str, viewport: dict[str, int]) -> Any:
    context = SignedIn(chromium, server, user).new_context(
        viewport=viewport, locale="en-GB", accept_downloads=True
    )
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    return pg


def shot(pg: Any, name: str, tmp_path: Path) -> None:
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def record_a_dose(
    pg: Any, server: str, person: dict[str, Any], tmp_path: Path, *, suffix: str, words: dict
) -> str:
    """Home -> Record a vaccination -> find by phone -> choose -> batch only -> certificate;
    returns the certificate page's URL."""
    pg.goto(f"{server}/ui/{words.get('lang', '')}")
    shot(pg, f"task-home{suffix}", tmp_path)
    pg.locator(".task-list a.task").first.click()
    pg.locator("#find-q").fill(person["phone"])
    pg.locator("form.find button[type=submit]").click()
    pg.locator(".found a.pick").first.wait_for()
    assert person["name"] in pg.locator(".found").inner_text()
    shot(pg, f"task-vaccinate-find{suffix}", tmp_path)
    pg.locator(".found a.pick").first.click()
    batch = pg.locator("#v-batch")
    batch.wait_for()
    shot(pg, f"task-vaccinate-dose{suffix}", tmp_path)
    batch.select_option(index=1)  # the one choice staff make
    pg.locator("#record-dose").click()
    pg.locator(".cert-status").wait_for(timeout=20_000)  # "being issued" refreshes until then
    heading = pg.locator("h1").inner_text()
    assert person["name"] in heading and words["dose"] in heading
    shot(pg, f"task-certificate{suffix}", tmp_path)
    with pg.expect_download() as download:
        pg.locator("#download-pdf").click()
    path = download.value.path()
    assert Path(path).read_bytes().startswith(b"%PDF")
    return str(pg.url).split("?")[0]


def test_staff_record_a_dose_then_a_facility_admin_revokes_it(
    chromium: Any, server: str, tmp_path: Path
):
    staff = open_page(chromium, server, STAFF, DESKTOP)
    url = record_a_dose(
        staff, server, PEOPLE[1], tmp_path, suffix="", words={"dose": "dose 1 of 2"}
    )
    assert staff.locator(".cert-lifecycle").count() == 0  # staff may not revoke
    staff.context.close()

    admin = open_page(chromium, server, ADMIN, DESKTOP)
    admin.goto(url)
    admin.locator("details.lifecycle summary", has_text="Revoke").click()
    admin.locator("#reason-revoke").fill("recorded for the wrong person")
    admin.locator("#confirm-revoke").check()
    shot(admin, "task-certificate-revoke", tmp_path)
    admin.locator("#do-revoke").click()
    admin.locator(".cert-status.revoked").wait_for()
    assert "recorded for the wrong person" in admin.locator(".cert-status").inner_text()
    credential = json.loads(admin.locator(".cert-json pre").text_content())
    # the QR picture the page shows, as the person holding the certificate would have it
    src = admin.locator(".cert-qr img").get_attribute("src") or ""
    qr = admin.request.get(src if "://" in src else server + src)
    assert qr.ok and qr.body().startswith(b"\x89PNG")
    (tmp_path / "qr.png").write_bytes(qr.body())
    admin.context.close()
    verdict = httpx.post(f"{server}/api/v1/verify", json={"credential": credential}).json()
    assert verdict["status"] == "REVOKED"
    # anyone's /verify page reads the picture and says REVOKED (helpers of its own test)
    verifier = chromium.new_page()
    verify_page.open_page(verifier, f"{server}/verify")
    seen = verify_page.picture(verifier, tmp_path / "qr.png")
    assert seen["status"] == "REVOKED", seen
    assert "revoked" in seen["reason"].lower()  # the reason stays with the registry
    verifier.context.close()


def test_the_same_in_hindi_at_360px(chromium: Any, server: str, tmp_path: Path):
    pg = open_page(chromium, server, STAFF, PHONE)
    pg.goto(f"{server}/ui/lang?lang=hi&next=/ui/")  # the language switcher's cookie
    assert pg.locator("html").get_attribute("lang") == "hi"
    assert "टीकाकरण दर्ज करें" in pg.locator(".task-list").inner_text()
    record_a_dose(pg, server, PEOPLE[2], tmp_path, suffix="-360-hi", words={"dose": "खुराक 1 / 2"})
    assert "PDF डाउनलोड करें" in pg.locator("#download-pdf").inner_text()
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the certificate page scrolls sideways at 360 px ({width} px)"
    pg.context.close()
