"""Anonymous verification does bounded work: `POST /api/v1/verify` and `POST /credentials/verify`
refuse oversized or over-complex documents (size, nesting, values, arrays, blank nodes, QR text)
with a 4xx problem naming the limit, before any JSON-LD expansion or canonicalization, and in
a few milliseconds whatever the input."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from open_registry.core.testing import client_for
from open_registry.plugins.certificates import jsonld, qr, suites
from open_registry.plugins.certificates.keys import b58encode
from open_registry.plugins.certificates.limits import (
    LimitExceeded,
    VerifyLimits,
    check_document,
)
from open_registry.plugins.certificates.runtime import runtime
from open_registry.plugins.certificates.verifier import INVALID, VALID
from tests.plugins.certificates.conftest import vaccination_credential


@pytest.fixture
def reg(make_registry: Any) -> Any:
    return make_registry()


@pytest.fixture
def anon(reg: Any) -> Iterator[TestClient]:
    with client_for(reg, anonymous=True) as client:
        yield client


def signed(reg: Any) -> dict[str, Any]:
    """A certificate this registry really signed."""
    key = runtime(reg).keys.current()
    return suites.sign(vaccination_credential(key.issuer), key.private_key, key.verification_method)


def forged(reg: Any, **subject: Any) -> dict[str, Any]:
    """What anyone can send: this registry's (public) issuer and verification method, any
    content, a made-up signature. Verifying it canonicalizes all of it."""
    key = runtime(reg).keys.current()
    credential = vaccination_credential(key.issuer)
    credential["credentialSubject"].update(subject)
    credential["proof"] = {
        "type": "DataIntegrityProof",
        "cryptosuite": "eddsa-rdfc-2022",
        "created": "2026-01-01T00:00:00Z",
        "verificationMethod": key.verification_method,
        "proofPurpose": "assertionMethod",
        "proofValue": "z" + b58encode(bytes(64)),
    }
    return credential


def post(client: TestClient, body: Any, path: str = "/api/v1/verify", **kw: Any) -> Any:
    streamed = isinstance(body, bytes | Iterator)  # bytes as they are; an iterator: chunked
    content = body if streamed else orjson.dumps(body)
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    return client.post(path, content=content, headers=headers, **kw)


def refused(resp: Any, status: int, setting: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    assert f"(limit {setting})" in problem["detail"], problem
    assert problem["errors"][0]["keyword"] == setting
    return problem


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


# -- size --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/verify", "/credentials/verify"])
def test_a_10_mb_body_is_413_naming_the_limit(anon: TestClient, path: str):
    body = b'{"verifiableCredential": "' + b"x" * 10_000_000 + b'"}'
    problem = refused(post(anon, body, path), 413, "max_verify_bytes")
    assert "65536 bytes" in problem["detail"]


def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit(anon: TestClient):
    def chunks() -> Iterator[bytes]:  # no content-length: chunked transfer encoding
        yield b'{"verifiableCredential": "'
        for _ in range(160):  # 10 MB in 64 KiB chunks
            yield b"x" * 65536
        yield b'"}'

    resp = post(anon, chunks())
    assert "content-length" not in resp.request.headers
    refused(resp, 413, "max_verify_bytes")


# -- nesting -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "setting"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 413, "max_verify_bytes"),  # 200 KB
        (b"[" * 30_000 + b"]" * 30_000, 400, "max_verify_depth"),  # past orjson's 1,024 too
        (b'{"verifiableCredential":' + b"[" * 1000 + b"]" * 1000 + b"}", 400, "max_verify_depth"),
    ],
)
def test_deep_nesting_is_refused(anon: TestClient, body: bytes, status: int, setting: str):
    refused(post(anon, body), status, setting)


@pytest.mark.parametrize("path", ["/api/v1/verify", "/credentials/verify"])
def test_a_credential_nesting_900_levels_is_a_400_not_a_recursion_error(
    reg: Any, anon: TestClient, path: str
):
    text = orjson.dumps({"verifiableCredential": forged(reg, address="@@")}).decode()
    nested = '{"id": "urn:x:1", "name": ' * 900 + '"x"' + "}" * 900
    body = text.replace('"@@"', nested).encode()
    problem = refused(post(anon, body, path), 400, "max_verify_depth")
    assert "document nests deeper than 32 levels" in problem["detail"]


# -- width -------------------------------------------------------------------------------------


def test_huge_arrays_are_refused(reg: Any, anon: TestClient):
    refused(post(anon, forged(reg, name=[0] * 1_000_000)), 413, "max_verify_bytes")
    problem = refused(post(anon, forged(reg, name=["a"] * 2000)), 400, "max_verify_array")
    assert problem["errors"][0]["pointer"] == "/credentialSubject/name"


def test_too_many_values_are_refused(reg: Any, anon: TestClient):
    many = {f"k{i}": i for i in range(3000)}
    refused(post(anon, forged(reg, address=many)), 400, "max_verify_nodes")
    aliases = [{"id": "urn:x:s", "name": [f"v{i}" for i in range(200)]} for _ in range(3)]
    refused(post(anon, forged(reg, knows=aliases)), 400, "max_verify_nodes")


# -- blank nodes -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/verify", "/credentials/verify"])
def test_a_credential_with_thousands_of_blank_nodes_is_refused_cheaply(
    reg: Any, anon: TestClient, path: str
):
    thousands = [[{} for _ in range(250)] for _ in range(20)]  # 5,000 in 15 KB
    resp = post(anon, {"verifiableCredential": forged(reg, address=thousands)}, path)
    assert resp.status_code == 400, resp.text
    assert resp.json()["errors"][0]["keyword"] in ("max_verify_nodes", "max_verify_blank_nodes")
    problem = refused(
        post(anon, forged(reg, address=[{} for _ in range(100)])), 400, "max_verify_blank_nodes"
    )
    assert "more than 32 blank nodes" in problem["detail"]
    labels = [{"id": f"_:b{i}"} for i in range(40)]  # `_:` labels are blank nodes too
    refused(post(anon, forged(reg, knows=labels)), 400, "max_verify_blank_nodes")


# -- the QR and text forms ---------------------------------------------------------------------


def test_qr_payloads_are_bounded_before_and_after_inflating(reg: Any, anon: TestClient):
    # the base64 text itself
    long = base64.b64encode(b"\x00" * 30_000).decode()  # 40,000 characters
    refused(post(anon, {"qr": long}), 413, "max_verify_text")
    # a deflate bomb: qr.py stops inflating at 64 KiB
    bomb = base64.b64encode(deflate(b"[" * 5_000_000)).decode()
    assert len(bomb) < 8192
    resp = post(anon, {"qr": bomb})
    assert resp.status_code == 422, resp.text
    # what it inflates to goes through the same limits as a body
    packed = base64.b64encode(qr.compact_payload(forged(reg, address=[{}] * 100))).decode()
    problem = refused(post(anon, {"qr": packed}), 400, "max_verify_blank_nodes")
    assert problem["errors"][0]["pointer"].startswith("/qr")


def test_health_card_texts_are_bounded(anon: TestClient):
    refused(post(anon, {"text": "HC1:" + "0" * 60_000}), 413, "max_verify_text")
    # a SMART Health Card JWS whose header is JSON nested 5,000 deep (json.loads recurses)
    header = base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=")
    refused(post(anon, {"text": f"{header}.e30.e30"}), 400, "max_verify_depth")
    # and one whose deflated payload inflates to JSON nested 60,000 deep
    header = base64.urlsafe_b64encode(b'{"alg":"ES256","zip":"DEF"}').decode().rstrip("=")
    payload = base64.urlsafe_b64encode(deflate(b"[" * 60_000)).decode().rstrip("=")
    refused(post(anon, {"text": f"{header}.{payload}.e30"}), 400, "max_verify_depth")


# -- settings ----------------------------------------------------------------------------------


def test_the_limits_are_settings_and_real_certificates_fit_the_defaults(make_registry: Any):
    default = make_registry()
    certificate = signed(default)
    with client_for(default, anonymous=True) as client:
        assert post(client, certificate).json()["status"] == VALID
        assert post(client, {"verifiableCredential": certificate}).json()["status"] == VALID
        vc_api = post(client, {"verifiableCredential": certificate}, "/credentials/verify")
        assert vc_api.status_code == 200 and vc_api.json()["verified"] is True
        for payload in (qr.compact_payload(certificate), qr.divoc_payload(certificate)):
            body = {"qr": base64.b64encode(payload).decode()}
            assert post(client, body).json()["status"] == VALID
    strict = make_registry(plugins={"certificates": {"max_verify_depth": "3"}})
    with client_for(strict, anonymous=True) as client:
        problem = refused(post(client, signed(strict)), 400, "max_verify_depth")
        assert "deeper than 3 levels" in problem["detail"]
    with pytest.raises(Exception, match="max_verify_nodes"):
        make_registry(plugins={"certificates": {"max_verify_nodes": 0}})


# -- below the routes --------------------------------------------------------------------------


def deep_credential(reg: Any, depth: int) -> dict[str, Any]:
    inner: Any = "x"
    for _ in range(depth):
        inner = {"id": "urn:x:1", "name": inner}
    return forged(reg, address=inner)


def test_the_verifier_answers_invalid_for_a_too_deep_credential_and_never_raises(reg: Any):
    verifier = runtime(reg).verifier
    verdict = verifier.verify(deep_credential(reg, 2000))
    assert verdict.status == INVALID
    assert "too deeply" in verdict.reason
    limited = verifier.verify(deep_credential(reg, 40), limits=VerifyLimits())
    assert limited.status == INVALID
    assert "(limit max_verify_depth)" in limited.reason


def test_json_ld_processing_of_a_too_deep_document_is_a_processing_error(reg: Any):
    document = deep_credential(reg, 2000)
    document.pop("proof")
    with pytest.raises(jsonld.JsonLdProcessingError, match="too deeply"):
        jsonld.canonicalize(document)


@pytest.mark.parametrize(
    ("document", "setting"),
    [
        ([0] * 1_000_000, "max_verify_array"),
        ({f"k{i}": i for i in range(1_000_000)}, "max_verify_nodes"),
        ([[{}] * 200] * 200, "max_verify_nodes"),
        ([{} for _ in range(250)], "max_verify_blank_nodes"),
        ([f"_:x{i}" for i in range(250)], "max_verify_blank_nodes"),
    ],
)
def test_check_document_stops_at_the_first_limit(document: Any, setting: str):
    with pytest.raises(LimitExceeded) as caught:
        check_document(document)
    assert caught.value.setting == setting


def test_check_document_is_iterative_on_hostile_depth():
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(LimitExceeded, match="deeper than 32 levels"):
        check_document(deep)
    context_terms = {"@context": {f"t{i}": {"@id": f"urn:t{i}"} for i in range(50)}}
    check_document(context_terms)  # term definitions are not blank nodes
