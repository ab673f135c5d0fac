"""The verification page `/verify` on the server side: the page and its files are public and
served from the package, it speaks English, Hindi and French, its trust bundle holds what an
offline check needs (and no secret), and the picture reader is bounded (bytes, pixels, types).
The page's in-browser canonicalization (static/verify-core.js) is checked against the
registry's own under Node; the page itself runs in test_verify_page_browser.py."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from PIL import Image

from open_registry.core import Settings
from open_registry.plugins.certificates import keys, qr, shc, shortcut, status, suites
from open_registry.plugins.certificates.config import CertificatesConfig, ConfigError
from open_registry.plugins.certificates.verify_page import STATIC, negotiate
from tests.plugins.certificates.conftest import vaccination_credential
from tests.plugins.certificates.test_issuance import (
    certificates,
    deliver,
    make_client,
    vaccination,
)

CORE = STATIC / "verify-core.js"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    yield from make_client(settings, verify_page_max_image_bytes=200_000)


def anonymous(client: TestClient) -> TestClient:
    return TestClient(client.app)


def page_data(html: str) -> dict[str, Any]:
    start = html.index('<script type="application/json" id="verify-data">') + 49
    return json.loads(html[start : html.index("</script>", start)])


def test_the_page_is_public_and_speaks_three_languages(client: TestClient):
    c = anonymous(client)
    english = c.get("/verify")
    assert english.status_code == 200 and english.headers["content-language"] == "en"
    assert "<h1>Verify a certificate</h1>" in english.text
    hindi = c.get("/verify", headers={"Accept-Language": "hi-IN,hi;q=0.9,en;q=0.5"})
    assert hindi.headers["content-language"] == "hi" and "प्रमाणपत्र सत्यापित करें" in hindi.text
    french = c.get("/verify?lang=fr", headers={"Accept-Language": "hi"})
    assert "<h1>Vérifier un certificat</h1>" in french.text and 'lang="fr"' in french.text
    assert page_data(french.text)["messages"]["status.VALID"] == "VALIDE"
    assert page_data(french.text)["maxCacheAge"] == 24 * 3600
    c.cookies.set("registry_lang", "hi")
    assert c.get("/verify").headers["content-language"] == "hi"
    assert c.get("/verify?lang=xx").headers["content-language"] == "hi"  # unknown: next choice
    for lang in ("en", "hi", "fr"):  # every status has a word in every language
        messages = page_data(c.get(f"/verify?lang={lang}").text)["messages"]
        for word in ("VALID", "REVOKED", "SUSPENDED", "EXPIRED", "INVALID", "UNKNOWN"):
            assert messages[f"status.{word}"], (lang, word)


def test_negotiation_order():
    assert negotiate(None, None, None) == "en"
    assert negotiate(None, None, "fr-CA;q=0.8, hi;q=0.9") == "hi"
    assert negotiate("FR", "hi", "hi") == "fr"
    assert negotiate("de", None, "de, fr;q=0.1") == "fr"


def test_the_page_loads_only_its_own_files_and_may_use_the_camera(client: TestClient):
    c = anonymous(client)
    resp = c.get("/verify")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert "camera=(self)" in resp.headers["permissions-policy"]
    assert "<script>" not in resp.text and "http" not in resp.text.split("<body>")[0].replace(
        "http-equiv", ""
    )
    data = page_data(resp.text)
    for url in data["assets"]:
        asset = c.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(("text/javascript", "text/css"))
    jsqr = c.get("/verify/static/vendor/jsQR.js")
    assert jsqr.content == (STATIC / "vendor" / "jsQR.js").read_bytes()
    assert c.get("/verify/static/vendor/LICENSE").text.lstrip().startswith("Apache License")
    worker = c.get(data["urls"]["worker"])
    assert worker.headers["service-worker-allowed"] == "/verify"
    assert f'const VERSION = "{data["version"]}"' in worker.text
    for missing in ("/verify/static/nothing.js", "/verify/static/../verify_page.py"):
        assert c.get(missing).status_code == 404


def test_the_trust_bundle_holds_keys_and_status_but_no_secret(client: TestClient):
    vacs = [vaccination(client, recipient=n) for n in range(3)]
    deliver(client)
    valid, revoked, suspended = (certificates(client, v["id"])[0] for v in vacs)
    client.post(f"/api/v1/certificates/{revoked['id']}/revoke", json={"reason": "lost"})
    client.post(f"/api/v1/certificates/{suspended['id']}/suspend", json={"reason": "check"})
    bundle = anonymous(client).get("/verify/trust.json")
    assert bundle.status_code == 200
    trust = bundle.json()
    assert valid["credential"]["issuer"] in trust["issuers"]
    assert all(set(k) == {"kid", "kty", "crv", "x", "y", "hcertKid"} for k in trust["es256"])
    assert "private" not in bundle.text and '"d"' not in bundle.text
    assert trust["revokedIds"] == [shc.rid_of(revoked["id"])]
    assert trust["suspendedIds"] == [shc.rid_of(suspended["id"])]
    for cert, revoked_bit, suspended_bit in (
        (valid, False, False),
        (revoked, True, False),
        (suspended, False, True),
    ):
        entries = {e["statusPurpose"]: e for e in cert["credential"]["credentialStatus"]}
        for purpose, expected in (("revocation", revoked_bit), ("suspension", suspended_bit)):
            entry = entries[purpose]
            bits = status.decode(trust["statusLists"][entry["statusListCredential"]])
            assert status.bit(bits, int(entry["statusListIndex"])) is expected


def _png(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("L", size, 255).save(out, fmt)
    return out.getvalue()


def test_the_picture_reader_reads_our_codes_and_bounds_what_it_is_sent(client: TestClient):
    vac = vaccination(client)
    deliver(client)
    [cert] = certificates(client, vac["id"])
    c = anonymous(client)

    def post(body: bytes, ctype: str = "image/png") -> Any:
        return c.post("/verify/decode-image", content=body, headers={"content-type": ctype})

    payload = qr.divoc_payload(cert["credential"])
    found = post(qr.qr_png(payload))
    assert found.status_code == 200 and base64.b64decode(found.json()["qr"]) == payload
    card = client.get(f"/api/v1/certificates/{cert['id']}/shc?format=png").content
    assert post(card).json()["text"].startswith("shc:/")
    too_big = post(b"\x89PNG" + bytes(200_001))
    assert too_big.status_code == 413
    assert "verify_page_max_image_bytes" in too_big.json()["detail"]
    wide = post(_png((6000, 3000)))  # 18 million pixels, a small file
    assert wide.status_code == 413
    assert "verify_page_max_image_pixels" in wide.json()["detail"]
    assert post(b"GIF89a", "image/gif").status_code == 415
    assert post(b"not a picture").status_code == 400
    assert post(b"").status_code == 400
    blank = post(_png((50, 50), "JPEG"), "image/jpeg")
    assert blank.status_code == 400 and "no QR code" in blank.json()["detail"]


def test_the_page_settings_are_checked():
    settings = Settings(plugins={"certificates": {"verify_page_max_cache_age": "3600"}})
    assert CertificatesConfig.from_settings(settings).verify_page_max_cache_age == 3600
    with pytest.raises(ConfigError, match="verify_page_max_image_bytes"):
        CertificatesConfig.from_settings(
            Settings(plugins={"certificates": {"verify_page_max_image_bytes": 0}})
        )


# -- the page's canonicalization, under Node -------------------------------------------------

_NODE_SCRIPT = """
require(process.argv[1]);
const C = globalThis.VerifyCore;
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", async () => {
  const { cases, trust } = JSON.parse(input);
  const out = [];
  for (const c of cases) {
    out.push({ canonical: await C.canonicalize(c.document), verdict: c.verify
      ? (await C.verifyCredential(c.document, trust)).status : null });
  }
  process.stdout.write(JSON.stringify(out));
});
"""


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI (the page's JavaScript is checked with it)")
        pytest.skip("node is not installed")
    return node


def _random_text(rng: random.Random) -> str:
    pool = 'aé ñ\t\n"\\\x01\x7fदेवनागरी\ue000\U0001f600<>{}'
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 12)))


def _variants(issuer: str, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for n in range(24):
        credential = vaccination_credential(issuer)
        subject = credential["credentialSubject"]
        evidence = credential["evidence"][0]
        subject["name"] = _random_text(rng)
        evidence["vaccine"] = _random_text(rng)
        evidence["dose"] = rng.choice([1, "1", 2, True])
        if n % 3 == 0:  # two equal blank nodes: RDFC-1.0's Hash N-Degree Quads decides
            evidence["facility"]["address"] = dict(subject["address"])
        if n % 4 == 1:
            del subject["id"]
        if n % 5 == 2:
            credential["credentialStatus"] = [
                {
                    "type": "BitstringStatusListEntry",
                    "statusPurpose": purpose,
                    "statusListIndex": str(rng.randint(0, 1000)),
                    "statusListCredential": f"https://r.example/status-lists/{purpose}/0",
                }
                for purpose in ("revocation", "suspension")
            ]
        out.append(credential)
    return out


def test_the_pages_canonical_form_is_the_registrys():
    """verify-core.js writes the same canonical N-Quads as shortcut.py for our credential
    shape (escapes, numbers, booleans, equal blank nodes, Devanagari and astral characters),
    and verifies what the registry signs; another shape is left to the registry (null)."""
    node = _node()
    key = Ed25519PrivateKey.generate()
    issuer = keys.did_key(key.public_key())
    method = keys.did_key_method(key.public_key())
    rng = random.Random(17)
    cases = []
    expected = []
    for credential in _variants(issuer, rng):
        signed = suites.sign(credential, key, method, canonicalizer=shortcut.canonicalize)
        cases.append({"document": credential, "verify": False})
        expected.append((shortcut.canonicalize(credential), None))
        cases.append({"document": signed, "verify": True})
        expected.append((None, "VALID"))
    forged = json.loads(json.dumps(cases[-1]["document"]))
    forged["credentialSubject"]["name"] += "x"
    cases.append({"document": forged, "verify": True})
    expected.append((None, "INVALID"))
    other = vaccination_credential(issuer, unknownTerm="x")
    cases.append({"document": other, "verify": False})
    expected.append((None, None))
    trust = {"issuers": [issuer], "methods": {}, "statusLists": {}}
    done = subprocess.run(
        [node, "-e", _NODE_SCRIPT, str(CORE)],
        input=json.dumps({"cases": cases, "trust": trust}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for n, (result, (canonical, verdict)) in enumerate(zip(results, expected, strict=True)):
        if cases[n]["verify"]:
            assert result["verdict"] == verdict, n
        else:
            assert result["canonical"] == canonical, n


def test_the_vendored_decoder_is_documented():
    readme = (STATIC / "vendor" / "README.md").read_text()
    assert "jsQR" in readme and "1.4.0" in readme and "Apache" in readme
    assert Path(STATIC / "vendor" / "LICENSE").is_file()
