"""The verification page `/verify` in a real browser: Debian's Chromium driven by Playwright
against a uvicorn server (`build` below, run in the server's process) holding a valid, a revoked
and a suspended certificate, and trusting DIVOC and another issuer's cards and HCERTs
(`other_issuers`). The page reads QR pictures through its file input, text pasted
into it (SMART Health Card, EU DCC), and the camera (Chromium's fake device playing a Y4M file
of the QR code); it verifies online through the registry, and offline, once the server is gone,
from what it saved (service worker, keys, status lists).

Like tests/registry/test_ui_browser.py, these skip locally without Chromium or Playwright and
fail in CI (`CI` set).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import cheap_hashing
from tests.browser import launch
from tests.browser import require as require_browser
from tests.registry.test_ui_browser import ROOT
from tests.uvicorn_server import serve

pytestmark = pytest.mark.browser

FIXTURE = "verify-fixture.json"  # written by `build` into the server's folder
EU_CODES = {"euMa": "ORG-100001699", "euMp": "EU/1/21/1529", "euVp": "J07BX03"}


def build() -> Any:
    """The app for uvicorn (`--factory`): demo data, three vaccinations and their certificates
    issued before the server starts (one revoked, one suspended), and what the tests need
    written to `verify-fixture.json` in the working folder."""
    from open_registry.core import Settings, create_app
    from open_registry.core.outbox.worker import Worker
    from tests.authn import admin_client

    cheap_hashing.install()  # this server's users: argon2's profile for tests
    settings = Settings.load(demo_data=True, load_entrypoints=False)
    app = create_app(settings)
    registry = app.state.registry
    client = admin_client(app)  # no `with`: the server, not this client, runs the lifespan
    [vaccine] = client.get("/api/v1/vaccine?code=CVX-AV").json()["items"]
    client.patch(f"/api/v1/vaccine/{vaccine['id']}", json=EU_CODES).raise_for_status()
    first = {
        entity: client.get(f"/api/v1/{entity}?limit=5").json()["items"]
        for entity in ("recipient", "program", "vaccinator", "facility")
    }
    ids = []
    for n in range(3):
        body = {
            "recipient": first["recipient"][n]["id"],
            "program": first["program"][0]["code"],
            "vaccine": "CVX-AV",
            "vaccinator": first["vaccinator"][0]["code"],
            "facility": first["facility"][0]["code"],
            "dose": 1,
            "totalDoses": 2,
            "batch": "4121Z005",
            "date": "2026-03-01T10:30:00+05:30",
        }
        resp = client.post("/api/v1/vaccination", json=body)
        resp.raise_for_status()
        ids.append(resp.json()["id"])
    worker = Worker(registry)
    while worker.run_once(limit=10_000):
        pass
    certs = [client.get(f"/api/v1/certificate?vaccination={vid}").json()["items"][0] for vid in ids]
    valid, revoked, suspended = certs
    revoke = f"/api/v1/certificates/{revoked['id']}/revoke"
    client.post(revoke, json={"reason": "test"}).raise_for_status()
    suspend = f"/api/v1/certificates/{suspended['id']}/suspend"
    client.post(suspend, json={"reason": "test"}).raise_for_status()
    fixture = {
        "valid": valid["credential"],
        "revoked": revoked["credential"],
        "suspended": suspended["credential"],
        "names": [c["credential"]["credentialSubject"]["name"] for c in certs],
        "shc": client.get(f"/api/v1/certificates/{valid['id']}/shc?format=text").text,
        "shc_revoked": client.get(f"/api/v1/certificates/{revoked['id']}/shc?format=text").text,
        "hcert": client.get(f"/api/v1/certificates/{valid['id']}/hcert?format=text").text,
    }
    Path(FIXTURE).write_text(json.dumps(fixture))
    return app


def other_issuers(tmp: Path) -> tuple[Path, dict[str, Any]]:
    """A `trust_dir` trusting DIVOC and another issuer's cards and HCERTs
    (tests/plugins/certificates/other_issuers.py), and what the tests show the page of them:
    DIVOC's own sample, a certificate of a DIVOC deployment nobody trusts, the other issuer's
    card (its key has no revocation list saved) and HCERT."""
    from tests.plugins.certificates.other_issuers import OtherIssuer, divoc_sample, record

    other = OtherIssuer()
    trust = other.trust_dir(tmp / "trust")
    found = {
        "divoc": divoc_sample(),
        "divoc_stranger": other.divoc_certificate(),
        "other_card": other.card(record("Erika Mustermann"), second_key=True),
        "other_hcert": other.hcert(record("Erika Mustermann")),
    }
    return trust, found


@contextmanager
def verify_server(tmp: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A server of `build` on loopback, trusting the issuers of `other_issuers`; yields its base
    URL and the fixture it wrote, with `other_issuers`' certificates."""
    trust, others = other_issuers(tmp)
    env = {
        **os.environ,
        "REGISTRY_DATA_DIR": str(tmp / "data"),
        "PYTHONPATH": str(ROOT),
        "REGISTRY_PLUGINS__CERTIFICATES__TRUST_DIR": str(trust),
    }
    env.pop("REGISTRY_DATABASE_URL", None)
    module = "tests.plugins.certificates.test_verify_page_browser:build"
    with serve(module, tmp, env, timeout=60) as base:
        yield base, {**json.loads((tmp / FIXTURE).read_text()), **others}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    require_browser()
    with verify_server(tmp_path_factory.mktemp("verify-page")) as found:
        yield found


@pytest.fixture(scope="module")
def pngs(server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """QR pictures of the fixture's credentials (DIVOC ZIP payloads; `compact`: raw deflate)."""
    from open_registry.plugins.certificates import qr

    _, fixture = server
    folder = tmp_path_factory.mktemp("qr")
    out = {}
    for name in ("valid", "revoked", "suspended"):
        out[name] = folder / f"{name}.png"
        out[name].write_bytes(qr.qr_png(qr.divoc_payload(fixture[name])))
    out["compact"] = folder / "compact.png"
    out["compact"].write_bytes(qr.qr_png(qr.compact_payload(fixture["valid"])))
    for name in ("divoc", "divoc_stranger"):  # DIVOC-issued certificates (ZIP payloads)
        out[name] = folder / f"{name}.png"
        out[name].write_bytes(qr.qr_png(qr.divoc_payload(fixture[name])))
    return out


@pytest.fixture(scope="module")
def playwright(server: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def chromium(playwright: Any) -> Iterator[Any]:
    browser = launch(playwright)
    yield browser
    browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 390, "height": 844}, locale="en-GB")
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()


def screenshot(pg: Any, name: str) -> None:
    """With UPDATE_SCREENSHOTS=1: the page as docs/screenshots/<name>.png."""
    if os.environ.get("UPDATE_SCREENSHOTS"):
        pg.screenshot(path=str(ROOT / "docs" / "screenshots" / f"{name}.png"), full_page=True)


def open_page(pg: Any, url: str) -> None:
    pg.goto(url)
    pg.wait_for_selector("body[data-ready=true]")


def outcome(pg: Any) -> dict[str, str]:
    """The page's verdict once it has one: status, how it was checked, and the facts shown."""
    pg.wait_for_selector("#result[data-status]:not([data-status=''])")
    facts = {name: pg.inner_text(f"#fact-{name}") for name in ("name", "dose", "vaccine", "issuer")}
    return {
        "status": pg.get_attribute("#result", "data-status") or "",
        "checked": pg.get_attribute("#result", "data-checked") or "",
        "verdict": pg.inner_text("#verdict"),
        "reason": pg.inner_text("#fact-reason"),
        **facts,
    }


def picture(pg: Any, path: Path) -> dict[str, str]:
    pg.evaluate("document.getElementById('result').removeAttribute('data-status')")
    pg.set_input_files("#picture", str(path))
    return outcome(pg)


def paste(pg: Any, text: str) -> dict[str, str]:
    pg.evaluate("document.getElementById('result').removeAttribute('data-status')")
    pg.fill("#paste", text)
    pg.click("#paste-form button[type=submit]")
    return outcome(pg)


def test_pictures_of_valid_revoked_and_suspended_certificates(
    server: Any, pngs: dict[str, Path], page: Any
):
    base, fixture = server
    open_page(page, f"{base}/verify")
    valid = picture(page, pngs["valid"])
    assert valid["status"] == "VALID" and valid["verdict"] == "VALID", valid
    assert valid["checked"] == "online"
    assert valid["name"] == fixture["names"][0]
    assert valid["dose"] == "1 of 2" and "Coronavec" in valid["vaccine"]
    assert picture(page, pngs["compact"])["status"] == "VALID"  # the raw-deflate payload
    revoked = picture(page, pngs["revoked"])
    assert revoked["status"] == "REVOKED" and revoked["name"] == fixture["names"][1]
    screenshot(page, "verify-revoked")
    assert picture(page, pngs["suspended"])["status"] == "SUSPENDED"


def test_pasted_smart_health_card_and_eu_dcc(server: Any, page: Any):
    base, fixture = server
    open_page(page, f"{base}/verify")
    card = paste(page, fixture["shc"])
    assert card["status"] == "VALID", card
    assert card["name"] and card["name"].split()[-1] in fixture["names"][0]
    assert paste(page, fixture["shc_revoked"])["status"] == "REVOKED"
    dcc = paste(page, fixture["hcert"])
    assert dcc["status"] == "VALID" and dcc["dose"] == "1 of 2", dcc
    assert paste(page, "HC1:NOT-A-CERTIFICATE")["status"] == "INVALID"


def test_divoc_certificates_and_other_issuers_cards_online(
    server: Any, pngs: dict[str, Path], page: Any
):
    """DIVOC's sample is VALID (its issuer is trusted), another DIVOC deployment's INVALID;
    the other issuer's card and HCERT are VALID, saying revocation was not checked."""
    base, _ = server
    open_page(page, f"{base}/verify")
    divoc = picture(page, pngs["divoc"])
    assert divoc["status"] == "VALID" and divoc["checked"] == "online", divoc
    assert divoc["name"] == "Bhaya Mitra" and "CoVax" in divoc["vaccine"]
    assert divoc["issuer"].startswith("https://divoc.dev/")
    stranger = picture(page, pngs["divoc_stranger"])
    assert stranger["status"] == "INVALID" and stranger["name"] == "Anand Rao", stranger
    assert "is not trusted" in stranger["reason"]
    _, fixture = server
    card = paste(page, fixture["other_card"])
    assert card["status"] == "VALID" and card["name"] == "Erika Mustermann", card
    assert "https://cards.other.example" in card["issuer"]
    assert "revocation not checked" in card["reason"]
    dcc = paste(page, fixture["other_hcert"])
    assert dcc["status"] == "VALID" and "revocation not checked" in dcc["reason"], dcc


def test_the_hindi_page(server: Any, pngs: dict[str, Path], page: Any):
    base, fixture = server
    open_page(page, f"{base}/verify?lang=hi")
    assert page.get_attribute("html", "lang") == "hi"
    assert page.inner_text("h1") == "प्रमाणपत्र सत्यापित करें"
    valid = picture(page, pngs["valid"])
    assert valid["status"] == "VALID" and valid["verdict"] == "मान्य"
    assert valid["dose"] == "2 में से 1" and valid["name"] == fixture["names"][0]
    screenshot(page, "verify-valid-360-hi")


def y4m(payload: bytes, target: Path, width: int = 1280, height: int = 720) -> None:
    """A two-frame Y4M video (4:2:0, grey) showing the payload's QR code centred on white."""
    from PIL import Image

    from open_registry.plugins.certificates import qr

    modules = qr.encode(payload).size + 2 * qr.QUIET_ZONE
    png = qr.qr_png(payload, scale=max(1, (height - 40) // modules))
    frame = Image.new("L", (width, height), 255)
    with Image.open(io.BytesIO(png)) as code:
        frame.paste(code.convert("L"), ((width - code.width) // 2, (height - code.height) // 2))
    chroma = bytes([128]) * ((width // 2) * (height // 2) * 2)
    header = f"YUV4MPEG2 W{width} H{height} F5:1 Ip A1:1 C420jpeg\n".encode()
    target.write_bytes(header + (b"FRAME\n" + frame.tobytes() + chroma) * 2)


def test_the_camera_reads_a_certificate(
    server: Any, playwright: Any, pngs: dict[str, Path], tmp_path: Path
):
    from open_registry.plugins.certificates import qr

    base, fixture = server
    video = tmp_path / "qr.y4m"
    y4m(qr.divoc_payload(fixture["valid"]), video)
    browser = launch(
        playwright,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )
    try:
        context = browser.new_context(permissions=["camera"])
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        open_page(pg, f"{base}/verify")
        pg.click("#camera-start")
        found = outcome(pg)
        assert found["status"] == "VALID" and found["name"] == fixture["names"][0], found
        assert pg.is_hidden("#viewfinder")  # the camera stops once a code is read
    finally:
        browser.close()


def test_offline_the_page_verifies_from_what_it_saved(chromium: Any, tmp_path: Path):
    """A server of its own, stopped halfway: whatever the page does next cannot reach it."""
    with verify_server(tmp_path) as (base, fixture):
        from open_registry.plugins.certificates import qr

        own = {}
        for name in ("valid", "revoked"):
            own[name] = tmp_path / f"{name}.png"
            own[name].write_bytes(qr.qr_png(qr.divoc_payload(fixture[name])))
        context = chromium.new_context(locale="fr-FR")
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        open_page(pg, f"{base}/verify")
        assert pg.get_attribute("html", "lang") == "fr"
        assert pg.evaluate("navigator.serviceWorker.ready.then(() => true)")
        pg.reload()  # now under the service worker, which saves what it serves
        pg.wait_for_selector("body[data-ready=true]")
        assert "enregistrées" in pg.inner_text("#cache")
        assert pg.get_attribute("#cache", "class") == "cache"  # fresh: no warning
        # the saved bundle made two days old: past verify_page_max_cache_age (24 h)
        pg.evaluate(
            """async () => {
                const cache = await caches.open("verify-trust");
                const saved = await (await cache.match("/verify/trust.json")).json();
                saved.savedAt -= 2 * 86400 * 1000;
                await cache.put("/verify/trust.json", new Response(JSON.stringify(saved)));
            }"""
        )
    try:
        context.set_offline(True)
        pg.reload()
        pg.wait_for_selector("body[data-ready=true]")
        assert pg.inner_text("h1") == "Vérifier un certificat"
        assert pg.inner_text("#network") == "Hors ligne"
        assert pg.get_attribute("#cache", "class") == "cache old"
        assert "plus de 24 heures" in pg.inner_text("#cache")
        valid = picture(pg, own["valid"])
        assert valid["status"] == "VALID" and valid["checked"] == "offline", valid
        assert valid["verdict"] == "VALIDE" and valid["name"] == fixture["names"][0]
        revoked = picture(pg, own["revoked"])
        assert revoked["status"] == "REVOKED" and revoked["checked"] == "offline", revoked
        card = paste(pg, fixture["shc"])
        assert card["status"] == "VALID" and card["checked"] == "offline", card
        assert paste(pg, fixture["shc_revoked"])["status"] == "REVOKED"
        dcc = paste(pg, fixture["hcert"])
        assert dcc["status"] == "VALID" and dcc["checked"] == "offline", dcc
        # another issuer's card and HCERT, from the trust lists saved with the bundle
        other = paste(pg, fixture["other_card"])
        assert other["status"] == "VALID" and other["checked"] == "offline", other
        assert "révocation n'a pas été vérifiée" in other["reason"]
        other = paste(pg, fixture["other_hcert"])
        assert other["status"] == "VALID" and other["checked"] == "offline", other
        # DIVOC's Ed25519Signature2018 cannot be checked on the device: said, never guessed
        divoc = paste(pg, json.dumps(fixture["divoc"]))
        assert divoc["status"] == "UNKNOWN" and divoc["name"] == "Bhaya Mitra", divoc
        # tampered: one character of the name changed, the signature no longer matches
        forged = dict(fixture["valid"])
        forged["credentialSubject"] = {**forged["credentialSubject"], "name": "Someone Else"}
        assert paste(pg, json.dumps(forged))["status"] == "INVALID"
    finally:
        context.close()
