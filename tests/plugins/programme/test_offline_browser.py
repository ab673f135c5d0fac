"""Offline data entry on `/ui/vaccinate` in a real browser (Debian's Chromium, Playwright).

A facility staff member opens the page online (the service worker keeps the app shell, the page
keeps the day's data) and looks up two people; the server is then stopped (Playwright's
`set_offline` does not cover service workers), the page reloads from the service worker and,
offline, a person is enrolled and three doses recorded (the new person, and the two looked up);
an invalid entry is refused in the browser first. The page is reloaded (the queue is kept),
the server restarted on the same port, one batch set to 0 doses meanwhile, and "Sync now" sends
the queue: the recipient, then the three doses; the dose of the used-up batch is refused with
the server's reason next to the batch, fixed and resent. The server then holds three
vaccinations and three certificates, none twice, also after an entry is sent again with its key
(a reload that lost the answer). The page weight of the offline app is printed.

Skips locally without Chromium or Playwright, fails in CI (as `tests/registry/test_ui_browser.py`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import require as require_browser
from tests.browser import running_chromium
from tests.plugins.programme.vaccinate_server import BATCH, FACILITY, PASSWORD, STAFF
from tests.registry.test_ui_browser import SignedIn
from tests.uvicorn_server import free_port, serve

ROOT = Path(__file__).resolve().parents[3]
PEOPLE = json.loads((ROOT / "registry" / "demo" / "recipient.json").read_text())
OTHER_BATCH = "LOT-OFFLINE-B"
FACTORY = "tests.plugins.programme.vaccinate_server:build"

pytestmark = pytest.mark.browser


def running(port: int, folder: Path, env: dict[str, str]) -> Any:
    """The vaccinate server on `port` until the block ends (its data stays in `folder`)."""
    return serve(FACTORY, folder, env, port=port, timeout=60)


@pytest.fixture
def place(tmp_path: Path) -> tuple[int, Path, dict[str, str]]:
    require_browser()
    env = {**os.environ, "REGISTRY_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    env.pop("REGISTRY_DATABASE_URL", None)
    return free_port(), tmp_path, env


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the module's tests (each test opens its own context)."""
    with running_chromium() as browser:
        yield browser


def admin(base: str) -> httpx.Client:
    token = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "ui-admin", "password": PASSWORD}
    ).json()["access_token"]
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def ready(pg: Any) -> None:
    pg.wait_for_selector("#offline[data-ready=true]", state="attached")


def choose(pg: Any, label: str) -> None:
    pg.select_option("#off-v-batch", label)
    pg.dispatch_event("#off-v-batch", "change")


def weight(pg: Any) -> dict[str, int]:
    """Bytes of the app shell in Cache Storage and of the day's data kept in IndexedDB."""
    return pg.evaluate(
        """async () => {
            let shell = 0;
            for (const name of await caches.keys()) {
                const cache = await caches.open(name);
                for (const req of await cache.keys()) {
                    shell += (await (await cache.match(req)).arrayBuffer()).byteLength;
                }
            }
            const db = await new Promise((ok) => {
                const r = indexedDB.open("registry-offline"); r.onsuccess = () => ok(r.result);
            });
            const data = await new Promise((ok) => {
                const r = db.transaction("kv").objectStore("kv").get("data");
                r.onsuccess = () => ok(r.result.v);
            });
            return {shell, data: new Blob([JSON.stringify(data)]).size};
        }"""
    )


def test_offline_enrol_and_three_doses_then_sync(place: Any, chromium: Any):
    port, folder, env = place
    people = PEOPLE[20:22]
    browser = chromium
    with running(port, folder, env) as base, admin(base) as api:
        expiry = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 200 * 86400))
        lot = {"facility": FACILITY, "vaccine": "CVX-AV", "batch": OTHER_BATCH}
        made = api.post("/api/v1/stock", json={**lot, "quantity": 20, "expiry": expiry})
        assert made.status_code == 201, made.text
        other_lot = made.json()["id"]
        context = SignedIn(browser, base, STAFF).new_context(locale="en-GB")
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        pg.goto(f"{base}/ui/vaccinate")
        ready(pg)
        assert pg.evaluate("navigator.serviceWorker.ready.then(() => true)")
        for person in people:  # looked up online: kept for the day
            pg.goto(f"{base}/ui/vaccinate?recipient={person['id']}")
            ready(pg)
        pg.goto(f"{base}/ui/vaccinate")  # under the service worker now: saved
        ready(pg)
        assert pg.get_attribute("#offline", "data-mode") is None
    # -- the server is gone ----------------------------------------------------------
    pg.reload()
    ready(pg)
    assert pg.get_attribute("#offline", "data-mode") == "offline"
    assert pg.is_hidden("#find-title")  # the server's own form needs the server
    # a new person: first refused by the browser (identity too short, no gender)
    pg.click("#off-new")
    pg.fill("#off-p-name", "Offline Person")
    pg.fill("#off-p-dob", "1990-04-05")
    pg.fill("#off-p-identity", "ab")
    choose(pg, BATCH)
    pg.click("#off-save")
    errors = pg.inner_text("#off-form")
    assert "must be at least 3 characters" in errors and "is required" in errors
    assert pg.inner_text("#queue-count") == "0"
    pg.fill("#off-p-identity", "did:example:offline:1")
    pg.select_option("#off-p-gender", "Female")
    pg.click("#off-save")
    pg.wait_for_selector("#queue > li >> nth=1")
    # two people looked up online: one with the batch about to be used up
    for person, batch in ((people[0], OTHER_BATCH), (people[1], BATCH)):
        pg.fill("#off-q", person["name"])
        pg.click(f"button[data-person='{person['id']}']")
        choose(pg, batch)
        assert pg.input_value("#off-v-dose") == "1"
        assert pg.input_value("#off-v-totalDoses") == "2"
        pg.click("#off-save")
        pg.wait_for_selector("#off-form", state="hidden")
    assert pg.inner_text("#queue-count") == "4"  # a recipient and three doses
    assert pg.inner_text("#sync-count") == "Awaiting sync: 4"
    if os.environ.get("UPDATE_SCREENSHOTS"):
        pg.screenshot(path=str(ROOT / "docs" / "screenshots" / "offline-queue.png"), full_page=True)
    pg.reload()  # still offline: the queue is kept
    ready(pg)
    assert pg.inner_text("#queue-count") == "4"
    assert pg.locator("#queue > li[data-state=waiting]").count() == 4
    shown = weight(pg)
    # -- back online; the other batch used up meanwhile --------------------------------
    with running(port, folder, env) as base, admin(base) as api:
        lot_now = api.get(f"/api/v1/stock/{other_lot}").json()
        cut = {k: v for k, v in lot_now.items() if not k.startswith("_") and k != "id"}
        put = api.put(f"/api/v1/stock/{other_lot}", json={**cut, "quantity": 0})
        assert put.status_code == 200, put.text
        pg.click("#sync-now")
        pg.wait_for_selector("#offline[data-synced]", state="attached")
        assert pg.locator("#queue > li[data-state=saved]").count() == 3
        refused = pg.locator("#queue > li[data-state=refused]")
        assert refused.count() == 1
        assert "used up" in refused.locator("[data-field=batch] .error").inner_text()
        assert pg.inner_text("#queue-count") == "1"
        refused.locator("select[name=batch]").select_option(BATCH)
        refused.locator("button[type=submit]").click()
        pg.wait_for_selector("#queue > li[data-state=refused]", state="detached")
        pg.locator("#queue > li[data-state=saved]").nth(3).wait_for()
        assert pg.inner_text("#queue-count") == "0"
        links = pg.eval_on_selector_all(
            "#queue a.certificate", "els => els.map(e => e.getAttribute('href'))"
        )
        assert len(links) == 3
        # an entry sent again with its key (its answer lost to a reload): a replay
        pg.evaluate(
            """async () => new Promise((ok) => {
                const r = indexedDB.open("registry-offline");
                r.onsuccess = () => {
                    const t = r.result.transaction("queue", "readwrite");
                    const s = t.objectStore("queue");
                    s.getAll().onsuccess = (ev) => {
                        const dose = ev.target.result.find((e) => e.kind === "vaccination");
                        dose.state = "pending";
                        s.put(dose).onsuccess = () => ok(true);
                    };
                };
            })"""
        )
        pg.reload()  # opens online with a pending entry: syncs at once
        ready(pg)
        pg.locator("#queue > li[data-state=saved]").nth(3).wait_for()
        offline_person = api.get("/api/v1/recipient", params={"name": "Offline Person"}).json()[
            "items"
        ]
        assert len(offline_person) == 1
        ids = [offline_person[0]["id"], *(person["id"] for person in people)]
        doses = []
        for rid in ids:
            doses += api.get("/api/v1/vaccination", params={"recipient": rid}).json()["items"]
        assert sorted(d["recipient"] for d in doses) == sorted(ids)  # none twice
        assert {d["batch"] for d in doses} == {BATCH}
        assert sorted(f"/ui/vaccination/{d['id']}/certificate" for d in doses) == sorted(links)
        deadline = time.monotonic() + 30
        while True:  # the server's worker issues the certificates
            certs = [
                c
                for rid in ids
                for c in api.get("/api/v1/certificate", params={"recipient": rid}).json()["items"]
            ]
            if len(certs) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert sorted(c["vaccination"] for c in certs) == sorted(d["id"] for d in doses)
        print(f"\noffline app weight: shell {shown['shell']} B, data {shown['data']} B")


STORED = """async () => {
    const db = await new Promise((ok, no) => {
        const r = indexedDB.open("registry-offline"); r.onsuccess = () => ok(r.result);
        r.onerror = () => no(r.error);
    });
    const all = (store) => new Promise((ok) => {
        const r = db.transaction(store).objectStore(store).getAll();
        r.onsuccess = () => ok(r.result);
    });
    const kv = Object.fromEntries((await all("kv")).map((x) => [x.k, x.v]));
    const queue = await all("queue");
    const cached = [];
    for (const name of await caches.keys()) {
        for (const req of await (await caches.open(name)).keys()) cached.push(req.url);
    }
    db.close();
    return {kv, queue, cached};
}"""


def stored(pg: Any) -> dict[str, Any]:
    """What the page keeps on the device: IndexedDB's `kv` (by key) and `queue`, and the URLs
    in Cache Storage."""
    return pg.evaluate(STORED)


def open_the_day(context: Any, base: str, person: dict[str, Any]) -> Any:
    """A page that kept the day's data and looked `person` up online (three page loads)."""
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    for url in ("/ui/vaccinate", f"/ui/vaccinate?recipient={person['id']}", "/ui/vaccinate"):
        pg.goto(base + url)
        ready(pg)
    assert pg.evaluate("navigator.serviceWorker.ready.then(() => true)")
    return pg


def queue_a_dose(pg: Any, person: dict[str, Any], when: str | None = None) -> None:
    """Offline (the server stopped): reload from the service worker, record a dose."""
    pg.reload()
    ready(pg)
    assert pg.get_attribute("#offline", "data-mode") == "offline"
    pg.fill("#off-q", person["name"])
    pg.click(f"button[data-person='{person['id']}']")
    choose(pg, BATCH)
    if when:
        pg.fill("#off-v-date", when)
    pg.click("#off-save")
    pg.wait_for_selector("#off-form", state="hidden")
    assert pg.inner_text("#queue-count") == "1"


def test_sign_out_asks_then_clears_the_device_and_dates_use_the_programmes_zone(
    place: Any, chromium: Any
):
    """The browser is in New York, the programme in Kolkata: the offline form's date is
    Kolkata's now and a typed date is read as Kolkata's. Signing out with an entry waiting
    asks first; cancelled, nothing changes; confirmed, IndexedDB is emptied and no personal
    data is left in Cache Storage."""
    port, folder, env = place
    env = {**env, "REGISTRY_PLUGINS__PROGRAMME__TIMEZONE": "Asia/Kolkata"}
    person = PEOPLE[23]
    with running(port, folder, env) as base:
        context = SignedIn(chromium, base, STAFF).new_context(
            locale="en-GB", timezone_id="America/New_York"
        )
        pg = open_the_day(context, base, person)
    pg.reload()
    ready(pg)
    pg.fill("#off-q", person["name"])
    pg.click(f"button[data-person='{person['id']}']")
    shown = datetime.fromisoformat(pg.input_value("#off-v-date"))
    kolkata = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=5, minutes=30)
    assert abs(shown - kolkata) < timedelta(minutes=5), (shown, kolkata)
    queue_a_dose(pg, person, when="2026-01-10T09:15")
    kept = stored(pg)
    assert kept["queue"][0]["body"]["date"] == "2026-01-10T03:45:00.000Z"  # 09:15 at +05:30
    assert "2026-01-10 09:15" in pg.inner_text("#queue")
    assert kept["kv"]["data"]["timezone"] == "Asia/Kolkata" and kept["kv"]["looked"]
    with running(port, folder, env) as base:
        asked: list[str] = []

        def answer(accept: bool) -> Any:
            def handle(dialog: Any) -> None:
                asked.append(dialog.message)
                dialog.accept() if accept else dialog.dismiss()

            return handle

        sign_out = "header form[action$='/logout'] button"
        pg.once("dialog", answer(False))
        pg.click(sign_out)
        assert asked == [
            "1 entries have not been sent and will be deleted from this device. Sign out anyway?"
        ]
        assert len(stored(pg)["queue"]) == 1 and "/vaccinate" in pg.url  # cancelled: all kept
        pg.once("dialog", answer(True))
        with pg.expect_navigation():
            pg.click(sign_out)
        assert "/vaccinate" not in pg.url and len(asked) == 2
        left = stored(pg)
        assert left["kv"] == {} and left["queue"] == []
        assert not [u for u in left["cached"] if "offline/data" in u or "?" in u or "/api/" in u]
        context.close()


def test_the_days_data_goes_after_the_age_limit_and_the_queue_stays_in_hindi(
    place: Any, chromium: Any
):
    """The day's data and the people looked up, saved 13 hours ago (the limit is 12), are
    deleted when the page opens offline; the entry waiting stays. The page is in Hindi: the
    offline form's own texts are too."""
    port, folder, env = place
    person = PEOPLE[24]
    hi = json.loads((ROOT / "registry" / "locales" / "hi.json").read_text(encoding="utf-8"))
    with running(port, folder, env) as base:
        context = SignedIn(chromium, base, STAFF).new_context(locale="hi-IN")
        pg = open_the_day(context, base, person)
    queue_a_dose(pg, person)
    assert pg.inner_text("#offline-status") == hi["offline.status"]
    assert pg.inner_text("#sync-now") == hi["offline.sync_now"]
    assert pg.inner_text("#sync-count") == hi["offline.badge"].format(n=1)
    assert hi["offline.waiting"] in pg.inner_text("#queue")
    assert pg.inner_text("#off-new") == hi["offline.enrol"]
    pg.evaluate(
        """async () => new Promise((ok) => {
            const r = indexedDB.open("registry-offline");
            r.onsuccess = () => {
                const t = r.result.transaction("kv", "readwrite"), s = t.objectStore("kv");
                const old = Date.now() - 13 * 3600 * 1000;
                s.get("data").onsuccess = (ev) => {
                    const savedAt = new Date(old).toISOString();
                    s.put({k: "data", v: {...ev.target.result.v, savedAt}});
                };
                s.get("looked").onsuccess = (ev) => {
                    s.put({k: "looked", v: ev.target.result.v.map((p) => ({...p, savedAt: old}))});
                };
                t.oncomplete = () => { r.result.close(); ok(true); };
            };
        })"""
    )
    pg.reload()  # still offline
    ready(pg)
    kept = stored(pg)
    assert "data" not in kept["kv"] and kept["kv"]["looked"] == []
    assert [e["state"] for e in kept["queue"]] == ["pending"]
    assert pg.inner_text("#off-no-data") == hi["offline.no_data"]
    assert pg.inner_text("#queue-count") == "1"
    context.close()


def test_an_ended_session_asks_for_sign_in_keeps_the_queue_then_syncs_once(
    place: Any, chromium: Any
):
    """An entry queued offline; the server comes back with a new signing secret (every session
    has ended). "Sync now" sends nothing and asks for sign-in, the entry kept; signed in again,
    the page sends it, once."""
    port, folder, env = place
    person = PEOPLE[25]
    with running(port, folder, env) as base:
        context = SignedIn(chromium, base, STAFF).new_context(locale="en-GB")
        pg = open_the_day(context, base, person)
    queue_a_dose(pg, person)
    (folder / "data" / "auth-secret.key").unlink()  # a new secret at the next start
    with running(port, folder, env) as base, admin(base) as api:

        def doses() -> int:
            found = api.get("/api/v1/vaccination", params={"recipient": person["id"]})
            return len(found.json()["items"])

        pg.click("#sync-now")
        pg.wait_for_selector("#sync-sign-in")
        assert "Your session has ended" in pg.inner_text("#sync-message")
        assert pg.inner_text("#queue-count") == "1" and doses() == 0
        assert [e["state"] for e in stored(pg)["queue"]] == ["pending"]
        pg.click("#sync-sign-in")
        pg.fill("#username", STAFF)
        pg.fill("#password", PASSWORD)
        pg.click("form.login button[type=submit]")
        pg.wait_for_url("**/ui/vaccinate")
        ready(pg)  # opens online with an entry waiting: sends it
        pg.wait_for_selector("#queue > li[data-state=saved]")
        assert pg.inner_text("#queue-count") == "0" and doses() == 1
        pg.reload()
        ready(pg)
        assert [e["state"] for e in stored(pg)["queue"]] == ["saved"] and doses() == 1
        context.close()
