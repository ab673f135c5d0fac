"""Offline data entry: the time to sync 100 queued entries from the vaccinate page, and the page
weight of the offline app (plugins/programme/offline.py, docs/ui.md "Offline data entry").

A loopback server of `tests.plugins.programme.vaccinate_server` (SQLite, demo data), Chromium
signed in as its facility staff member. The page's queue (IndexedDB) is filled with N/2 people
enrolled offline and their first dose (N entries), then "Sync now" is timed until the round
ends. Baseline, in the same run: the same kind of N entries sent by one Python client (httpx,
the same session cookie, `Idempotency-Key` each), one after another. The weight is the bytes of
the app shell in Cache Storage plus the day's data kept in IndexedDB, for the demo facility.

    .venv/bin/python benchmarks/offline_sync.py [-n 100]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import ratio, scratch_folder


def entries(n: int, batch: str, facility: str, tag: str) -> list[dict]:
    """n queue entries: n/2 people and a first dose each (the page's IndexedDB shape)."""
    out: list[dict] = []
    for i in range(n // 2):
        local = f"local:{uuid.uuid4()}"
        person = {
            "name": f"Bench {tag} {i}",
            "dob": f"19{50 + i % 40}-0{1 + i % 9}-1{i % 9}",
            "gender": "Female",
            "identity": f"did:example:bench-{tag}:{i}",
            "enrollmentType": "WALK_IN",
        }
        dose = {
            "recipient": local,
            "program": "COVID19-2026",
            "vaccine": "CVX-AV",
            "dose": 1,
            "totalDoses": 2,
            "batch": batch,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "facility": facility,
        }
        common = {"state": "pending", "owner": "vx-staff", "made": 0, "label": person["name"]}
        out.append(
            {
                "kind": "recipient",
                "localId": local,
                "key": str(uuid.uuid4()),
                "body": person,
                **common,
            }
        )
        out.append({"kind": "vaccination", "key": str(uuid.uuid4()), "body": dose, **common})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100, help="queued entries (half people)")
    args = parser.parse_args()
    import os

    import httpx
    from playwright.sync_api import sync_playwright

    from tests.cli.test_serve import free_port
    from tests.plugins.programme.test_offline_browser import admin, ready, running, weight
    from tests.plugins.programme.vaccinate_server import FACILITY, STAFF
    from tests.registry.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, SignedIn

    root = Path(__file__).resolve().parents[1]
    with scratch_folder("offline-sync-") as folder:
        env = {**os.environ, "REGISTRY_DATA_DIR": str(folder / "data"), "PYTHONPATH": str(root)}
        env.pop("REGISTRY_DATABASE_URL", None)
        with running(free_port(), folder, env) as base, admin(base) as api:
            expiry = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 200 * 86400))
            lot = {"facility": FACILITY, "vaccine": "CVX-AV", "batch": "LOT-BENCH"}
            api.post("/api/v1/stock", json={**lot, "quantity": 10 * args.n, "expiry": expiry})
            login = httpx.post(
                f"{base}/api/v1/auth/login", json={"username": STAFF, "password": PASSWORD}
            )
            cookie = login.cookies["registry_session"]
            # baseline: the same requests from one Python client
            direct = httpx.Client(
                base_url=base,
                cookies={"registry_session": cookie},
                headers={"Origin": base},
                timeout=60,
            )
            ids: dict[str, str] = {}
            started = time.perf_counter()
            for e in entries(args.n, "LOT-BENCH", FACILITY, "direct"):
                body = dict(e["body"])
                if e["kind"] == "vaccination":
                    body["recipient"] = ids[body["recipient"]]
                resp = direct.post(
                    f"/api/v1/{e['kind']}", json=body, headers={"Idempotency-Key": e["key"]}
                )
                if e["kind"] == "recipient":
                    ids[e["localId"]] = resp.json().get("id", "")
            baseline = time.perf_counter() - started
            direct.close()
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
                )
                context = SignedIn(browser, base, STAFF).new_context()
                pg = context.new_page()
                pg.set_default_timeout(600_000)
                pg.goto(f"{base}/ui/vaccinate")
                ready(pg)
                pg.evaluate("navigator.serviceWorker.ready.then(() => true)")
                pg.reload()
                ready(pg)
                sized = weight(pg)
                queued = entries(args.n, "LOT-BENCH", FACILITY, "page")
                pg.evaluate(
                    """async (items) => new Promise((ok) => {
                        const r = indexedDB.open("registry-offline");
                        r.onsuccess = () => {
                            const t = r.result.transaction("queue", "readwrite");
                            items.forEach((e) => t.objectStore("queue").add(e));
                            t.oncomplete = () => ok(true);
                        };
                    })""",
                    queued,
                )
                pg.reload()  # opens online with pending entries: it syncs at once
                started = time.perf_counter()
                pg.wait_for_selector("#offline[data-synced]", state="attached")
                synced = time.perf_counter() - started
                saved = pg.locator("#queue > li[data-state=saved]").count()
                refused = pg.locator("#queue > li[data-state=refused]").count()
                browser.close()
    print(
        f"sync of {args.n} queued entries from the page: {synced:.2f} s "
        f"({saved} saved, {refused} refused)"
    )
    print(f"the same {args.n} requests from one Python client: {baseline:.2f} s")
    print(f"ratio page / direct: {ratio(synced, baseline):.2f}")
    print(
        f"offline app weight: shell {sized['shell']} B + day's data {sized['data']} B "
        f"= {sized['shell'] + sized['data']} B"
    )


if __name__ == "__main__":
    main()
