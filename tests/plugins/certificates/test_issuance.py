"""The certificates plugin end to end, on SQLite and PostgreSQL: a recorded vaccination becomes
one signed certificate through the outbox; duplicates, corrections, revocation, suspension,
status lists, key rotation, the verify API and the VC-API."""

from __future__ import annotations

import copy
import json
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Settings, StartupError, create_app, open_registry
from open_registry.core.demo import load_demo_data
from open_registry.core.outbox.worker import Worker, counts
from open_registry.plugins.certificates.runtime import runtime
from tests.authn import admin_client
from tests.plugins.certificates.test_node_verifier import run_node_verifier

FIXTURES = Path(__file__).parents[2] / "fixtures"
DIVOC = FIXTURES / "divoc" / "certificates"


def make_client(settings: Settings, **plugin_settings: Any) -> Iterator[TestClient]:
    settings = (
        settings.with_(plugins={"certificates": plugin_settings}) if plugin_settings else settings
    )
    reg = open_registry(settings)
    load_demo_data(reg.services)
    with admin_client(create_app(registry=reg)) as client:
        client.registry = reg  # type: ignore[attr-defined]
        Worker(reg).run_once(limit=10**6)  # the demo data's own events
        yield client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    yield from make_client(settings)


def first(client: TestClient, entity: str, n: int = 0) -> dict[str, Any]:
    return client.get(f"/api/v1/{entity}?limit=20").json()["items"][n]


def vaccination(client: TestClient, recipient: int = 0, dose: int = 1, **extra: Any) -> dict:
    body = {
        "recipient": first(client, "recipient", recipient)["id"],
        "program": first(client, "program")["code"],
        "vaccine": first(client, "vaccine")["code"],
        "vaccinator": first(client, "vaccinator")["code"],
        "facility": first(client, "facility")["code"],
        "dose": dose,
        "totalDoses": 2,
        "batch": "4121Z005",
        "date": "2026-03-01T10:30:00+05:30",
        **extra,
    }
    resp = client.post("/api/v1/vaccination", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def deliver(client: TestClient) -> int:
    return Worker(client.registry).run_once(limit=10**6)  # type: ignore[attr-defined]


def certificates(client: TestClient, vaccination_id: str) -> list[dict[str, Any]]:
    items = client.get(f"/api/v1/certificate?vaccination={vaccination_id}&sort=revision").json()
    return items["items"]


def node_verdict(client: TestClient, credential: dict[str, Any]) -> dict[str, Any]:
    """Digital Bazaar's verdict, given our published status lists (fetched over our API)."""
    lists = {}
    for entry in credential.get("credentialStatus", []):
        url = entry["statusListCredential"]
        lists[url] = client.get(url.replace("http://localhost:8000", "")).json()
    return run_node_verifier([credential], lists)[0]


def verify(client: TestClient, credential: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/verify", json=credential)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_vaccination_yields_one_certificate_that_both_verifiers_accept(client: TestClient):
    vac = vaccination(client)
    assert certificates(client, vac["id"]) == []  # asynchronous: nothing before the worker runs
    # the vaccination's event, then the certificate's own (and the programme plugin's
    # suggested next-dose appointment)
    assert deliver(client) >= 2
    assert deliver(client) == 0
    [cert] = certificates(client, vac["id"])
    assert cert["status"] == "active" and cert["revision"] == 1
    credential = cert["credential"]
    assert credential["credentialSubject"]["name"] == first(client, "recipient")["name"]
    assert (
        credential["evidence"][0]["dose"] == 1 and credential["evidence"][0]["batch"] == "4121Z005"
    )
    assert credential["proof"]["cryptosuite"] == "eddsa-rdfc-2022"
    assert verify(client, credential)["status"] == "VALID"
    assert node_verdict(client, credential) == {"verified": True, "errors": []}
    served = client.get(f"/api/v1/certificates/{cert['id']}")
    assert served.headers["content-type"].startswith("application/ld+json")
    assert served.json() == credential
    assert counts(client.registry)["done"] >= 2  # type: ignore[attr-defined]
    revoked = client.post(f"/api/v1/certificates/{cert['id']}/revoke", json={"reason": "test"})
    assert revoked.status_code == 200
    assert verify(client, credential)["status"] == "REVOKED"
    assert "revocation bit is set" in node_verdict(client, credential)["errors"][0]


def test_duplicate_and_impossible_doses_are_refused(client: TestClient):
    vac = vaccination(client)
    again = client.post(
        "/api/v1/vaccination",
        json={k: v for k, v in vac.items() if not k.startswith("_") and k != "id"},
    )
    assert again.status_code == 409
    assert set(again.json()["fields"]) == {"recipient", "program", "dose"}
    too_many = client.post(
        "/api/v1/vaccination",
        json={**{k: v for k, v in vac.items() if not k.startswith("_") and k != "id"}, "dose": 3},
    )
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["pointer"] == "/dose"
    missing = client.post("/api/v1/vaccination", json={"dose": 1})
    assert missing.status_code == 422
    pointers = {e["pointer"] for e in missing.json()["errors"]}
    assert {"/recipient", "/program", "/batch", "/facility"} <= pointers


def test_certificates_cannot_be_written_through_the_generic_api(client: TestClient):
    vaccination(client)
    deliver(client)
    cert = client.get("/api/v1/certificate").json()["items"][0]
    forged = {k: v for k, v in cert.items() if not k.startswith("_") and k != "id"}
    forged["statusIndex"] = 99999
    assert client.post("/api/v1/certificate", json=forged).status_code == 403
    assert (
        client.patch(f"/api/v1/certificate/{cert['id']}", json={"status": "revoked"}).status_code
        == 403
    )


def test_revoke_suspend_and_reinstate_change_the_verdict(client: TestClient):
    vac = vaccination(client)
    deliver(client)
    [cert] = certificates(client, vac["id"])
    cid, credential = cert["id"], cert["credential"]
    bad = client.post(
        f"/api/v1/certificates/{cid}/suspend", json={"reason": "x", "until": "2000-01-01T00:00:00Z"}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/until"
    ok = client.post(
        f"/api/v1/certificates/{cid}/suspend",
        json={"reason": "under review", "until": "2099-01-01T00:00:00Z"},
    )
    assert ok.status_code == 200 and ok.json()["status"] == "suspended"
    assert verify(client, credential)["status"] == "SUSPENDED"
    assert client.post(f"/api/v1/certificates/{cid}/reinstate").status_code == 200
    assert verify(client, credential)["status"] == "VALID"
    no_reason = client.post(f"/api/v1/certificates/{cid}/revoke", json={})
    assert no_reason.status_code == 422 and no_reason.json()["errors"][0]["pointer"] == "/reason"
    assert (
        client.post(
            f"/api/v1/certificates/{cid}/revoke", json={"reason": "issued in error"}
        ).status_code
        == 200
    )
    verdict = verify(client, credential)
    assert verdict["status"] == "REVOKED" and verdict["checks"]["signature"] is True
    final = client.post(f"/api/v1/certificates/{cid}/reinstate")
    assert final.status_code == 409 and "cannot be undone" in final.json()["detail"]
    # the published status list says the same, and is itself a credential that verifies
    listed = client.get("/api/v1/status-lists/revocation/0").json()
    assert listed["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]
    verifier = runtime(client.registry).verifier  # type: ignore[attr-defined]
    from open_registry.plugins.certificates import status, suites

    assert suites.verify(listed, verifier.trust.resolve).verified
    position = cert["statusIndex"] % status.LIST_SIZE
    assert status.bit(status.decode(listed["credentialSubject"]["encodedList"]), position)
    assert client.get("/api/v1/status-lists/other/0").status_code == 404
    assert client.post("/api/v1/certificates/nope/revoke", json={"reason": "x"}).status_code == 404


def test_a_correction_reissues_and_revokes_the_old_certificate_up_to_a_limit(settings: Settings):
    for client in make_client(settings, max_corrections=1):
        vac = vaccination(client)
        deliver(client)
        [old] = certificates(client, vac["id"])
        resp = client.post(f"/api/v1/certificates/{old['id']}/correct", json={"batch": "FIXED-1"})
        assert resp.status_code == 202, resp.text
        deliver(client)
        first_cert, second = certificates(client, vac["id"])
        assert first_cert["id"] == old["id"] and first_cert["status"] == "revoked"
        assert first_cert["replacedBy"] == second["id"] and second["replaces"] == old["id"]
        assert second["revision"] == 2 and second["credential"]["evidence"][0]["batch"] == "FIXED-1"
        assert verify(client, old["credential"])["status"] == "REVOKED"
        assert verify(client, second["credential"])["status"] == "VALID"
        again = client.patch(f"/api/v1/vaccination/{vac['id']}", json={"batch": "FIXED-2"})
        assert again.status_code == 409 and "limit is 1" in again.json()["detail"]
        revoked_again = client.post(
            f"/api/v1/certificates/{old['id']}/correct", json={"batch": "X"}
        )
        assert revoked_again.status_code == 400


def test_deleting_a_vaccination_revokes_its_certificate(client: TestClient):
    vac = vaccination(client)
    deliver(client)
    assert client.delete(f"/api/v1/vaccination/{vac['id']}").status_code == 204
    deliver(client)
    cert = client.get(f"/api/v1/certificate?vaccination={vac['id']}").json()["items"][0]
    assert cert["status"] == "revoked" and "deleted" in cert["reason"]
    assert verify(client, cert["credential"])["status"] == "REVOKED"


def test_rotation_keeps_old_certificates_verifying_and_did_web_lists_every_key(settings: Settings):
    for client in make_client(settings, issuer="did:web:registry.example"):
        v1 = vaccination(client, recipient=0)
        deliver(client)
        rt = runtime(client.registry)  # type: ignore[attr-defined]
        rt.keys.rotate()
        v2 = vaccination(client, recipient=1)
        deliver(client)
        [c1], [c2] = certificates(client, v1["id"]), certificates(client, v2["id"])
        assert c1["verificationMethod"] != c2["verificationMethod"]
        assert c1["issuer"] == c2["issuer"] == "did:web:registry.example"
        assert verify(client, c1["credential"])["status"] == "VALID"
        assert verify(client, c2["credential"])["status"] == "VALID"
        doc = client.get("/.well-known/did.json").json()
        assert doc["id"] == "did:web:registry.example"
        assert {m["id"] for m in doc["verificationMethod"]} == {
            c1["verificationMethod"],
            c2["verificationMethod"],
        }
        assert "proof" not in json.dumps(doc) and "secret" not in json.dumps(doc).lower()
        for path in rt.keys.folder.glob("*.key"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_did_key_issuers_have_no_did_web_document(client: TestClient):
    assert client.get("/.well-known/did.json").status_code == 404


def test_keys_from_the_environment_never_touch_disk(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from open_registry.plugins.certificates.keys import public_multikey, secret_multikey

    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("REGISTRY_CERTIFICATES_SIGNING_KEY", secret_multikey(key))
    for client in make_client(settings):
        vac = vaccination(client)
        deliver(client)
        [cert] = certificates(client, vac["id"])
        assert cert["issuer"] == "did:key:" + public_multikey(key.public_key())
        folder = runtime(client.registry).keys.folder  # type: ignore[attr-defined]
        assert list(folder.glob("*.key")) == []
        assert secret_multikey(key) not in (folder / "keys.json").read_text()


def test_untrusted_tampered_and_expired_credentials(client: TestClient):
    vac = vaccination(client)
    deliver(client)
    credential = certificates(client, vac["id"])[0]["credential"]
    tampered = copy.deepcopy(credential)
    tampered["credentialSubject"]["name"] = "Somebody Else"
    verdict = verify(client, tampered)
    assert verdict["status"] == "INVALID" and "signature" in verdict["reason"]
    stranger = {**credential, "issuer": "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH"}
    assert "not trusted" in verify(client, stranger)["reason"]
    assert verify(client, {"hello": 1})["status"] == "INVALID"
    assert (
        client.post(
            "/api/v1/verify", content=b"[1,", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    # the VC-API signs what standard tooling sends, and its verify reports the verdict
    unsigned = {k: v for k, v in credential.items() if k not in ("proof", "credentialStatus")}
    unsigned["validUntil"] = "2001-01-01T00:00:00Z"
    unsigned["validFrom"] = "2000-01-01T00:00:00Z"
    issued = client.post(
        "/credentials/issue",
        json={"credential": {k: v for k, v in unsigned.items() if k != "issuer"}},
    )
    assert issued.status_code == 201, issued.text
    expired = issued.json()["verifiableCredential"]
    assert verify(client, expired)["status"] == "EXPIRED"
    answer = client.post("/credentials/verify", json={"verifiableCredential": expired})
    assert answer.status_code == 400 and answer.json()["verified"] is False
    good = client.post("/credentials/verify", json={"verifiableCredential": credential})
    assert good.status_code == 200 and good.json()["verified"] is True
    other_issuer = client.post(
        "/credentials/issue", json={"credential": {**unsigned, "issuer": "did:web:else.example"}}
    )
    assert other_issuer.status_code == 422
    undefined = client.post(
        "/credentials/issue", json={"credential": {**unsigned, "madeUpTerm": 1}}
    )
    assert undefined.status_code == 422 and "madeUpTerm" in json.dumps(undefined.json())


def test_divoc_samples_verify_through_the_api_with_a_trust_folder(
    settings: Settings, tmp_path: Path
):
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "divoc-rsa.json").write_text(
        json.dumps(
            {
                "id": "did:india",
                "publicKeyPem": (DIVOC / "rsa-sample-public.pem").read_text(),
                "issuers": ["https://divoc.dev/"],
            }
        )
    )
    for client in make_client(settings, trust_dir=str(trust)):
        sample = json.loads((DIVOC / "rsa-signed-sample.extracted.json").read_text())
        assert verify(client, sample)["status"] == "VALID"
        sample["credentialSubject"]["name"] = "Tampered"
        assert verify(client, sample)["status"] == "INVALID"


def test_bad_plugin_settings_stop_start_up(settings: Settings):
    with pytest.raises(StartupError, match=r"plugins\.certificates\.colour"):
        open_registry(settings.with_(plugins={"certificates": {"colour": "red"}}))
    with pytest.raises(StartupError, match="suite"):
        open_registry(settings.with_(plugins={"certificates": {"suite": "rot13"}}))


def test_a_programme_template_shapes_its_certificates(settings: Settings, tmp_path: Path):
    from open_registry.plugins.certificates.template import DEFAULT_TEMPLATE, load_templates

    folder = tmp_path / "templates"
    folder.mkdir()
    template = json.loads(DEFAULT_TEMPLATE.read_text())
    template["evidence"][0]["vaccine"] = "{{ vaccine.name | upper }} ({{ vaccine.code }})"
    template["name"] = "Certificate of {{ program.name }}"
    for client in make_client(settings, templates_dir=str(folder)):
        program = first(client, "program")
        (folder / f"{program['code']}.json").write_text(json.dumps(template))
        rt = runtime(client.registry)  # type: ignore[attr-defined]
        rt.issuer.default_template, rt.issuer.templates = load_templates(folder)
        vac = vaccination(client)
        deliver(client)
        credential = certificates(client, vac["id"])[0]["credential"]
        vaccine = first(client, "vaccine")
        assert (
            credential["evidence"][0]["vaccine"] == f"{vaccine['name'].upper()} ({vaccine['code']})"
        )
        assert credential["name"] == f"Certificate of {program['name']}"
        assert verify(client, credential)["status"] == "VALID"


def test_suite_option_ed25519_signature_2020(settings: Settings):
    for client in make_client(settings, suite="Ed25519Signature2020"):
        vac = vaccination(client)
        deliver(client)
        credential = certificates(client, vac["id"])[0]["credential"]
        assert credential["proof"]["type"] == "Ed25519Signature2020"
        assert verify(client, credential)["status"] == "VALID"
        assert node_verdict(client, credential)["verified"] is True


@pytest.mark.postgres
def test_parallel_workers_issue_each_certificate_exactly_once(settings: Settings):
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("several workers claim events concurrently on PostgreSQL")
    for client in make_client(settings):
        reg = client.registry  # type: ignore[attr-defined]
        recipients = client.get("/api/v1/recipient?limit=100").json()["items"]
        for i, r in enumerate(recipients[:20]):
            body = {
                "recipient": r["id"],
                "program": first(client, "program")["code"],
                "vaccine": first(client, "vaccine")["code"],
                "facility": first(client, "facility")["code"],
                "dose": 1,
                "totalDoses": 1,
                "batch": f"B{i}",
                "date": "2026-03-01T10:00:00Z",
            }
            assert client.post("/api/v1/vaccination", json=body).status_code == 201
        workers = [Worker(reg, name=f"w{i}", batch_size=3) for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda w: w.run_once(limit=10**6), workers))
        certs = client.get("/api/v1/certificate?limit=1000").json()["items"]
        assert len(certs) == min(20, len(recipients))
        assert len({c["vaccination"] for c in certs}) == len(certs)
        assert len({c["statusIndex"] for c in certs}) == len(certs)


def test_private_key_files_are_refused_when_others_can_read_them(settings: Settings):
    for client in make_client(settings):
        rt = runtime(client.registry)  # type: ignore[attr-defined]
        [path] = list(rt.keys.folder.glob("*.key"))
        os.chmod(path, 0o644)
        rt.keys._cached = None
        from open_registry.plugins.certificates.keystore import KeyStoreError

        with pytest.raises(KeyStoreError, match="chmod 600"):
            rt.keys.current()
        os.chmod(path, 0o600)


def test_qr_and_pdf_outputs_decode_back_to_the_certificate(client: TestClient):
    import io

    from pypdf import PdfReader

    from open_registry.plugins.certificates import qr

    vac = vaccination(client)
    deliver(client)
    [cert] = certificates(client, vac["id"])
    base = f"/api/v1/certificates/{cert['id']}"
    for payload in ("divoc", "compact"):
        png = client.get(f"{base}?format=png&payload={payload}")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert qr.decode_payload(qr.decode_image(png.content)) == cert["credential"]
    by_accept = client.get(base, headers={"accept": "image/svg+xml"})
    assert by_accept.headers["content-type"] == "image/svg+xml"
    assert by_accept.text.lstrip().startswith(("<?xml", "<svg"))
    pdf = client.get(base, headers={"accept": "application/pdf", "accept-language": "fr"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert cert["credential"]["credentialSubject"]["name"] in text
    assert client.get(f"{base}?format=gif").status_code == 400
    assert client.get(f"{base}?format=png&payload=zip").status_code == 400
    assert client.get("/api/v1/certificates/nope").status_code == 404
    # a QR payload is also accepted by the verify API
    import base64

    payload = base64.b64encode(qr.compact_payload(cert["credential"])).decode()
    assert verify(client, {"qr": payload})["status"] == "VALID"
    bad = client.post("/api/v1/verify", json={"qr": "bm90IGEgcXI="})
    assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/qr"


def test_cli_keys_and_offline_verify(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import typer
    from typer.testing import CliRunner

    from open_registry.plugins.certificates.commands import add_commands

    app = typer.Typer()
    add_commands(app)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGISTRY_DATABASE_URL", settings.sqlalchemy_url)
    data = str(settings.data_dir)
    runner = CliRunner()
    listed = runner.invoke(app, ["keys", "list", "--data-dir", data])
    assert listed.exit_code == 0 and "no signing keys" in listed.output
    assert runner.invoke(app, ["keys", "rotate", "--data-dir", data]).exit_code == 1
    made = runner.invoke(app, ["keys", "generate", "--data-dir", data])
    assert made.exit_code == 0 and "mode 600" in made.output
    for client in make_client(settings):
        vac = vaccination(client)
        deliver(client)
        [cert] = certificates(client, vac["id"])
        rotated = runner.invoke(app, ["keys", "rotate", "--data-dir", data])
        assert rotated.exit_code == 0 and "1 older key(s)" in rotated.output
        keys_out = runner.invoke(app, ["keys", "list", "--data-dir", data]).output
        assert keys_out.count("key-") == 2 and keys_out.count("*") == 2  # current Ed25519, ES256
        assert keys_out.startswith("CURRENT  ID")  # a header row
        assert "z" + "" in keys_out and "secret" not in keys_out.lower()
        file = tmp_path / "cert.json"
        file.write_text(json.dumps(cert["credential"]))
        ok = runner.invoke(app, ["verify", str(file), "--data-dir", data])
        assert ok.exit_code == 0 and ok.output.startswith("VALID"), ok.output
        png = tmp_path / "cert.png"
        png.write_bytes(client.get(f"/api/v1/certificates/{cert['id']}?format=png").content)
        from_picture = runner.invoke(app, ["verify", str(png), "--data-dir", data, "--json"])
        assert from_picture.exit_code == 0 and json.loads(from_picture.output)["status"] == "VALID"
        client.post(f"/api/v1/certificates/{cert['id']}/revoke", json={"reason": "lost"})
        revoked = runner.invoke(app, ["verify", str(file), "--data-dir", data])
        assert revoked.exit_code == 1 and revoked.output.startswith("REVOKED")
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("not json")
    bad = runner.invoke(app, ["verify", str(garbage), "--data-dir", data])
    assert bad.exit_code == 2 and "neither JSON nor a QR code" in bad.output
    missing = runner.invoke(app, ["verify", str(tmp_path / "none.json"), "--data-dir", data])
    assert missing.exit_code == 2


def test_vaccinations_imported_from_csv_get_certificates_and_certificates_cannot_be_imported(
    client: TestClient, tmp_path: Path
):
    from open_registry.core.imports.importer import ImportUsageError, import_file

    reg = client.registry  # type: ignore[attr-defined]
    recipients = client.get("/api/v1/recipient?limit=3").json()["items"]
    program, vaccine = first(client, "program")["code"], first(client, "vaccine")["code"]
    facility = first(client, "facility")["code"]
    lines = ["recipient,program,vaccine,facility,dose,totalDoses,batch,date"]
    lines += [
        f"{r['id']},{program},{vaccine},{facility},1,2,CSV-1,2026-03-02T09:00:00Z"
        for r in recipients
    ]
    lines.append(f"{recipients[0]['id']},{program},{vaccine},NOPE,2,2,CSV-1,2026-03-02T09:00:00Z")
    path = tmp_path / "vaccinations.csv"
    path.write_text("\n".join(lines) + "\n")
    result = import_file(reg.services["vaccination"], path)
    assert result.inserted == 3 and result.failed == 1  # the unknown facility, named per row
    deliver(client)
    certs = client.get("/api/v1/certificate?limit=10").json()["items"]
    assert sorted(c["recipient"] for c in certs) == sorted(r["id"] for r in recipients)
    assert all(verify(client, c["credential"])["status"] == "VALID" for c in certs)
    forged = tmp_path / "certificate.jsonl"
    forged.write_text(
        json.dumps({k: v for k, v in certs[0].items() if not k.startswith("_")}) + "\n"
    )
    with pytest.raises(ImportUsageError, match="cannot be imported"):
        import_file(reg.services["certificate"], forged)
