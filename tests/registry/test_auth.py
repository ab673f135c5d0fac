"""Signing in (password, one-time codes, client credentials), our tokens and their refusals, the
audit entries of each, and the actor recorded on writes. Real HTTP through the ASGI app, real
databases."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from open_registry.core import Settings, create_app, open_registry
from open_registry.core.audit.chain import AuditQuery, list_entries
from open_registry.core.codec import utcnow
from tests.authn import Messages as Outbox
from tests.authn import auth_headers

PASSWORD = "correct horse battery"


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


@pytest.fixture
def reg(settings: Settings, outbox: Outbox) -> Iterator[Any]:
    r = open_registry(settings.with_(otp_rate_per_identifier=10), plugins=[outbox])
    yield r
    r.close()


@pytest.fixture
def http(reg: Any) -> Iterator[TestClient]:
    with TestClient(create_app(registry=reg)) as c:
        yield c


def audit_actions(reg: Any, action: str) -> list[dict[str, Any]]:
    items, _ = list_entries(reg.db.engine, AuditQuery(action=action, limit=1000))
    return items


# -- passwords, tokens, sessions ---------------------------------------------------------------
def test_password_login_gives_a_working_token_and_an_httponly_session_cookie(reg, http):
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    resp = http.post("/api/v1/auth/login", json={"username": "asha", "password": PASSWORD})
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    cookie = resp.headers["set-cookie"]
    assert "registry_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "asha" and claims["roles"] == ["system-admin"]
    assert claims["aud"] == "open-registry-api" and claims["iss"] == "open-registry"
    me = http.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    ).json()
    assert me["subject"] == "asha" and me["roles"] == ["system-admin"]
    assert audit_actions(reg, "auth.login")[0]["actor"] == "user:asha"


def test_a_wrong_password_is_refused_and_audited_without_the_password(reg, http):
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    for name, pw in (("asha", "wrong password!"), ("nobody", PASSWORD)):
        resp = http.post("/api/v1/auth/login", json={"username": name, "password": pw})
        assert resp.status_code == 401
        assert resp.headers["content-type"].startswith("application/problem+json")
    failed = audit_actions(reg, "auth.login-failed")
    assert {e["fields"]["username"] for e in failed} == {"asha", "nobody"}
    assert "wrong password!" not in json.dumps(failed) and PASSWORD not in json.dumps(failed)


def test_the_actor_of_a_write_is_the_signed_in_user(reg, http):
    headers = auth_headers(reg, "system-admin", subject="asha")
    resp = http.post(
        "/api/v1/vaccine",
        json={"code": "V1", "name": "Vax", "manufacturer": "M", "status": "Active"},
        headers=headers,
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["_createdBy"] == "user:asha"
    items, _ = list_entries(reg.db.engine, AuditQuery(action="create", entity="vaccine"))
    assert items[0]["actor"] == "user:asha"


def _tampered(reg: Any) -> dict[str, str]:
    """Bearer tokens each wrong in one way."""
    t = reg.auth.tokens
    now = int(time.time())
    good = {
        "iss": t.issuer,
        "aud": t.audience,
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
        "kind": "user",
        "roles": ["system-admin"],
    }
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(good).encode()).rstrip(b"=").decode()
    return {
        "bad signature": jwt.encode(good, b"another secret of 32 bytes at least!", "HS256"),
        "algorithm not allowed": f"{header}.{payload}.",
        "expired": jwt.encode({**good, "exp": now - 10}, t.secret, "HS256"),
        "wrong audience": jwt.encode({**good, "aud": "someone-else"}, t.secret, "HS256"),
        "session as bearer": t.issue_session(reg.auth.users.active("asha")).token,
    }


def test_tampered_tokens_are_refused_and_audited(reg, http):
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    for what, token in _tampered(reg).items():
        resp = http.get("/api/v1/recipient", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 401, what
        assert "invalid_token" in resp.headers["www-authenticate"], what
    reasons = {e["fields"]["reason"] for e in audit_actions(reg, "auth.token-refused")}
    assert {"bad signature", "expired", "wrong audience"} <= reasons
    assert any(r.startswith("malformed") or r == "algorithm not allowed" for r in reasons)


def test_a_disabled_users_session_ends_at_once(reg, http):
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    http.post("/api/v1/auth/login", json={"username": "asha", "password": PASSWORD})
    assert http.get("/api/v1/auth/me").json()["subject"] == "asha"  # the cookie
    reg.auth.users.set_disabled("asha", True)
    assert http.get("/api/v1/auth/me").json()["authenticated"] is False
    resp = http.post("/api/v1/auth/login", json={"username": "asha", "password": PASSWORD})
    assert resp.status_code == 401


def test_anonymous_callers_get_only_public_operations(http):
    assert http.get("/api/v1/facility").status_code == 200  # read: public
    resp = http.get("/api/v1/recipient")
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    assert http.post("/api/v1/vaccine", json={}).status_code == 401
    assert http.get("/api/v1/audit").status_code == 401


def test_the_audit_api_is_for_system_admins(reg, http):
    assert http.get("/api/v1/audit", headers=auth_headers(reg, "controller")).status_code == 403
    assert http.get("/api/v1/audit", headers=auth_headers(reg)).status_code == 200


def test_user_fields_are_checked_with_the_field_named(reg):
    from open_registry.core.errors import Conflict, Invalid

    cases = [
        (dict(username="x", roles=["system-admin"], password=PASSWORD), "/username"),
        (dict(username="ravi", roles=["wizard"], password=PASSWORD), "/roles"),
        (dict(username="ravi", roles=["facility-staff"], password=PASSWORD), "/facility"),
        (dict(username="ravi", roles=["recipient"], password=PASSWORD), "/recipient"),
        (dict(username="ravi", roles=["system-admin"], password="short"), "/password"),
        (dict(username="ravi", roles=["system-admin"], email="not-an-email"), "/to"),
    ]
    for kw, pointer in cases:
        with pytest.raises(Invalid) as info:
            reg.auth.users.add(**kw)
        assert info.value.errors[0]["pointer"] == pointer, kw
    reg.auth.users.add("ravi", roles=["system-admin"], password=PASSWORD)
    with pytest.raises(Conflict):
        reg.auth.users.add("ravi", roles=["system-admin"], password=PASSWORD)


def test_passwords_are_stored_as_argon2id_hashes(reg):
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD, email="A@x.org")
    with reg.db.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM registry_users")).mappings().one()
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in json.dumps(dict(row), default=str)
    assert "a@x.org" not in json.dumps(dict(row), default=str).lower()  # a keyed hash only


# -- one-time codes ----------------------------------------------------------------------------
def _otp_user(reg: Any) -> None:
    reg.auth.users.add("ravi", roles=["facility-staff"], facility="F1", phone="+91 90000 00001")


def test_an_otp_sent_through_the_hook_signs_in(reg, http, outbox):
    _otp_user(reg)
    resp = http.post("/api/v1/auth/otp", json={"channel": "sms", "to": "+91 9000000001"})
    assert resp.status_code == 202
    (msg,) = outbox.sent
    assert msg["to"] == "+919000000001" and len(msg["code"]) == 6 and msg["minutes"] == 5
    resp = http.post(
        "/api/v1/auth/otp/verify",
        json={"channel": "sms", "to": "+91 90000 00001", "code": msg["code"]},
    )
    assert resp.status_code == 200, resp.text
    token = resp.json()["access_token"]
    me = http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["subject"] == "ravi" and me["facility"] == "F1"
    # a code works once (asked by a script without the session cookie the first answer set)
    http.cookies.clear()
    again = http.post(
        "/api/v1/auth/otp/verify",
        json={"channel": "sms", "to": "+91 90000 00001", "code": msg["code"]},
    )
    assert again.status_code == 401


def test_an_unknown_identifier_gets_the_same_answer_and_no_message(http, outbox):
    resp = http.post("/api/v1/auth/otp", json={"channel": "email", "to": "who@example.org"})
    assert resp.status_code == 202 and outbox.sent == []
    wrong = http.post(
        "/api/v1/auth/otp/verify",
        json={"channel": "email", "to": "who@example.org", "code": "123456"},
    )
    assert wrong.status_code == 401


def test_three_wrong_codes_lock_the_identifier_out(reg, http, outbox):
    _otp_user(reg)
    http.post("/api/v1/auth/otp", json={"channel": "sms", "to": "+91 90000 00001"})
    code = outbox.sent[0]["code"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    answers = [
        http.post(
            "/api/v1/auth/otp/verify",
            json={"channel": "sms", "to": "+91 90000 00001", "code": wrong},
        ).status_code
        for _ in range(3)
    ]
    assert answers == [401, 401, 429]
    right = http.post(
        "/api/v1/auth/otp/verify", json={"channel": "sms", "to": "+91 90000 00001", "code": code}
    )
    assert right.status_code == 429 and "locked" in right.json()["detail"]
    # asking for a new code while locked out sends nothing
    http.post("/api/v1/auth/otp", json={"channel": "sms", "to": "+91 90000 00001"})
    assert len(outbox.sent) == 1
    failed = audit_actions(reg, "auth.login-failed")
    assert len(failed) == 4 and code not in json.dumps(failed)
    assert "9000000001" not in json.dumps(failed)


def test_an_expired_code_is_refused(reg, http, outbox):
    _otp_user(reg)
    http.post("/api/v1/auth/otp", json={"channel": "sms", "to": "+91 90000 00001"})
    with reg.db.engine.begin() as conn:
        conn.execute(
            reg.db.metadata.tables["registry_otp"]
            .update()
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    resp = http.post(
        "/api/v1/auth/otp/verify",
        json={"channel": "sms", "to": "+91 90000 00001", "code": outbox.sent[0]["code"]},
    )
    assert resp.status_code == 401 and "expired" in resp.json()["detail"]


def test_code_requests_are_rate_limited_per_identifier_and_per_address(settings, outbox):
    reg = open_registry(
        settings.with_(otp_rate_per_identifier=2, otp_rate_per_address=3), plugins=[outbox]
    )
    try:
        _otp_user(reg)
        with TestClient(create_app(registry=reg)) as http:
            ask = lambda to: http.post("/api/v1/auth/otp", json={"channel": "sms", "to": to})  # noqa: E731
            assert [ask("+91 90000 00001").status_code for _ in range(3)] == [202, 202, 429]
            limited = ask("+91 90000 00001")
            assert limited.headers["retry-after"].isdigit()
            # the address has used 4 of its 3 (the limited ones count too): another number too
            assert ask("+91 90000 00002").status_code == 429
        assert len(outbox.sent) == 2
    finally:
        reg.close()


def test_the_console_sender_prints_the_code_but_never_logs_it(settings, capsys, caplog):
    reg = open_registry(settings)
    try:
        _otp_user(reg)
        with TestClient(create_app(registry=reg)) as http, caplog.at_level("DEBUG"):
            http.post("/api/v1/auth/otp", json={"channel": "sms", "to": "+91 90000 00001"})
        err = capsys.readouterr().err
        code = err.split("Your sign-in code is ")[1][:6]
        assert code.isdigit()
        assert code not in caplog.text and "sent to ***0001" in caplog.text
    finally:
        reg.close()


def test_the_smtp_sender_delivers_to_a_loopback_server(settings):
    from tests.registry.smtp_server import LoopbackSMTP

    with LoopbackSMTP() as server:
        reg = open_registry(
            settings.with_(
                notification_sender="smtp",
                smtp_host="127.0.0.1",
                smtp_port=server.port,
                smtp_from="registry@example.org",
                smtp_starttls=False,
            )
        )
        try:
            reg.auth.users.add("meena", roles=["system-admin"], email="Meena@Example.org")
            with TestClient(create_app(registry=reg)) as http:
                resp = http.post(
                    "/api/v1/auth/otp", json={"channel": "email", "to": "meena@example.org"}
                )
                assert resp.status_code == 202
                (mail,) = server.messages
                assert mail["rcpt"] == ["meena@example.org"]
                code = mail["data"].split("Your sign-in code is ")[1][:6]
                ok = http.post(
                    "/api/v1/auth/otp/verify",
                    json={"channel": "email", "to": "MEENA@example.org", "code": code},
                )
                assert ok.status_code == 200
        finally:
            reg.close()


# -- API clients -------------------------------------------------------------------------------
def test_client_credentials_give_a_scoped_token(reg, http):
    client, secret = reg.auth.clients.add(roles=["facility-staff"], facility="F1", name="his")
    form = {
        "grant_type": "client_credentials",
        "client_id": client["clientId"],
        "client_secret": secret,
    }
    resp = http.post("/api/v1/auth/token", data=form)
    assert resp.status_code == 200 and resp.headers["cache-control"] == "no-store"
    token = resp.json()["access_token"]
    me = http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["kind"] == "client" and me["roles"] == ["api-client", "facility-staff"]
    assert me["facility"] == "F1"
    basic = base64.b64encode(f"{client['clientId']}:{secret}".encode()).decode()
    resp = http.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert resp.status_code == 200
    bad = http.post("/api/v1/auth/token", data={**form, "client_secret": "nope"})
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    wrong_grant = http.post("/api/v1/auth/token", data={**form, "grant_type": "password"})
    assert wrong_grant.status_code == 400
    assert audit_actions(reg, "auth.login-failed")[0]["fields"]["client"] == client["clientId"]
    assert secret not in json.dumps(audit_actions(reg, "auth.login"))
    reg.auth.clients.set_disabled(client["clientId"], True)
    assert http.post("/api/v1/auth/token", data=form).status_code == 401
