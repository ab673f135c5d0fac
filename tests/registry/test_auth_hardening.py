"""Hardening of sign-in and tokens: which client address rate limits count (forwarded headers only
from trusted proxies), a per-username limit on failed passwords, tokens of disabled users and
clients refused at once, owner-only database files, and names matched whole. Real HTTP through
the ASGI app, real databases."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from open_registry.core import Settings, create_app, open_registry
from open_registry.core.audit.chain import AuditQuery, list_entries
from open_registry.core.auth.addresses import ClientAddresses
from open_registry.core.errors import Invalid
from open_registry.core.ui.schema_forms import FieldSpec, apply_spec
from tests.authn import auth_headers

PASSWORD = "correct horse battery"
LOGIN = "/api/v1/auth/login"
PROXY = "10.0.0.5"


def audit(reg: Any, action: str) -> list[dict[str, Any]]:
    items, _ = list_entries(reg.db.engine, AuditQuery(action=action, limit=1000, ascending=True))
    return items


@pytest.fixture
def opened(settings: Settings) -> Iterator[Any]:
    """`opened(**settings)`: a registry on the test's database, closed after the test."""
    regs: list[Any] = []

    def make(**changes: Any) -> Any:
        reg = open_registry(settings.with_(**changes))
        regs.append(reg)
        return reg

    yield make
    for reg in regs:
        reg.close()


def peer(app: Any, address: str) -> TestClient:
    """A client of `app` whose connection comes from `address`."""
    return TestClient(app, client=(address, 40000))


def wrong_login(http: TestClient, username: str = "asha", **headers: str) -> Any:
    return http.post(
        LOGIN, json={"username": username, "password": "not the password"}, headers=headers
    )


# -- 1. the client address: forwarded headers only from trusted proxies -------------------------
def test_forwarded_headers_are_not_read_unless_the_peer_is_a_trusted_proxy(opened):
    reg = opened(login_rate_per_address=2)  # forwarded_allow_ips: none (the default)
    app = create_app(registry=reg)
    http = peer(app, PROXY)
    statuses = [
        wrong_login(http, **{"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(3)
    ]
    assert statuses == [401, 401, 429]  # one address: the connection's, whatever the header says
    assert {e["fields"]["address"] for e in audit(reg, "auth.login-failed")} == {PROXY}


def test_behind_a_trusted_proxy_the_client_is_the_right_most_untrusted_forwarded_address(opened):
    reg = opened(login_rate_per_address=2, forwarded_allow_ips=f"{PROXY}, 192.168.0.0/16")
    app = create_app(registry=reg)
    via_proxy = peer(app, PROXY)
    # two people behind the proxy are counted apart (before: both were the proxy)
    assert wrong_login(via_proxy, **{"X-Forwarded-For": "203.0.113.1"}).status_code == 401
    assert wrong_login(via_proxy, **{"X-Forwarded-For": "203.0.113.2"}).status_code == 401
    assert wrong_login(via_proxy, **{"X-Forwarded-For": "203.0.113.1"}).status_code == 401
    # what a client writes left of the address the proxy appended changes nothing; trusted
    # proxies further in (192.168.x) are skipped
    for forged in ("198.51.100.1", "198.51.100.2, 10.9.9.9"):
        chain = f"{forged}, 203.0.113.1, 192.168.1.1"
        assert wrong_login(via_proxy, **{"X-Forwarded-For": chain}).status_code == 429
    # a peer that is no trusted proxy is itself the client, whatever it forwards
    direct = peer(app, "198.51.100.9")
    assert wrong_login(direct, **{"X-Forwarded-For": "203.0.113.77"}).status_code == 401
    addresses = [e["fields"]["address"] for e in audit(reg, "auth.login-failed")]
    assert addresses[:3] == ["203.0.113.1", "203.0.113.2", "203.0.113.1"]
    assert addresses[-1] == "198.51.100.9" and "203.0.113.77" not in addresses


def test_the_forwarded_header_of_rfc_7239_when_configured(opened):
    reg = opened(login_rate_per_address=1, forwarded_allow_ips=PROXY, forwarded_header="forwarded")
    http = peer(create_app(registry=reg), PROXY)
    v6 = 'for="[2001:db8::17]:4711";proto=https'
    assert wrong_login(http, Forwarded=f"for=198.51.100.1, {v6}").status_code == 401
    assert wrong_login(http, Forwarded=f"for=unknown, {v6}").status_code == 429
    # X-Forwarded-For is not the configured header: the client cannot use it to move
    spoof = {"X-Forwarded-For": "203.0.113.5", "Forwarded": v6}
    assert wrong_login(http, **spoof).status_code == 429
    assert {e["fields"]["address"] for e in audit(reg, "auth.login-failed")} == {"2001:db8::17"}


def test_code_requests_count_the_forwarded_client_too(opened):
    reg = opened(otp_rate_per_address=1, forwarded_allow_ips=PROXY)
    http = peer(create_app(registry=reg), PROXY)
    ask = lambda who, to: http.post(  # noqa: E731
        "/api/v1/auth/otp",
        json={"channel": "sms", "to": to},
        headers={"X-Forwarded-For": who},
    )
    assert ask("203.0.113.1", "+91 90000 00001").status_code == 202
    assert ask("203.0.113.2", "+91 90000 00002").status_code == 202
    assert ask("203.0.113.1", "+91 90000 00003").status_code == 429


@pytest.mark.parametrize(
    ("allow", "peer_address", "header", "value", "expected"),
    [
        ("", "10.0.0.5", "x-forwarded-for", "1.2.3.4", "10.0.0.5"),
        ("10.0.0.0/8", "10.0.0.5", "x-forwarded-for", "1.2.3.4, 5.6.7.8", "5.6.7.8"),
        ("10.0.0.0/8", "10.0.0.5", "x-forwarded-for", "1.2.3.4, 10.1.1.1", "1.2.3.4"),
        ("10.0.0.0/8", "10.0.0.5", "x-forwarded-for", "10.1.1.2, 10.1.1.1", "10.1.1.2"),
        ("10.0.0.0/8", "10.0.0.5", "x-forwarded-for", "1.2.3.4:5678", "1.2.3.4"),
        ("10.0.0.0/8", "::ffff:10.0.0.5", "x-forwarded-for", "::ffff:1.2.3.4", "1.2.3.4"),
        ("10.0.0.0/8", "10.0.0.5", "x-forwarded-for", "", "10.0.0.5"),
        ("10.0.0.0/8", "10.0.0.5", "x-forwarded-for", " , ", "10.0.0.5"),
        ("10.0.0.0/8", "10.0.0.5", "x-forwarded-for", "1.2.3.4, _hidden", "_hidden"),
        ("*", "198.51.100.1", "x-forwarded-for", "1.2.3.4", "1.2.3.4"),
        ("fd00::/8", "fd00::1", "forwarded", 'for="[2001:db8::1]:80";by=x', "2001:db8::1"),
        # an unbalanced quote from the client cannot swallow what the proxy appended
        ("fd00::/8", "fd00::1", "forwarded", 'for="1.2.3.4, for=5.6.7.8', "5.6.7.8"),
        ("10.0.0.0/8", "10.0.0.5", "forwarded", "proto=https", "unknown"),
    ],
)
def test_client_addresses(allow, peer_address, header, value, expected):
    found = ClientAddresses(allow, header).of(
        {"client": (peer_address, 1), "headers": [(header.encode(), value.encode())]}
    )
    assert found == expected


def test_client_address_settings_are_checked():
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        ClientAddresses("10.0.0.0/33")
    with pytest.raises(ValueError, match="forwarded_header"):
        ClientAddresses("", "x-real-ip")


# -- 2. failed passwords per username, whatever the address --------------------------------------
def test_failed_passwords_are_limited_per_username_across_addresses(opened):
    reg = opened(login_rate_per_username=3)
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    reg.auth.users.add("ravi", roles=["system-admin"], password=PASSWORD)
    app = create_app(registry=reg)
    for i in range(3):  # an attacker who takes a new address for every guess
        assert wrong_login(peer(app, f"198.51.100.{i}")).status_code == 401
    limited = peer(app, "198.51.100.50").post(
        LOGIN, json={"username": "asha", "password": PASSWORD}
    )
    # refused even with the right password (no oracle), naming the limit, with Retry-After
    assert limited.status_code == 429
    assert "username" in limited.json()["detail"]
    assert 0 < int(limited.headers["retry-after"]) <= reg.settings.otp_rate_window_seconds
    # another user, from the same addresses, is not affected
    ok = peer(app, "198.51.100.0").post(LOGIN, json={"username": "ravi", "password": PASSWORD})
    assert ok.status_code == 200
    reasons = [e["fields"].get("reason") for e in audit(reg, "auth.login-failed")]
    assert reasons[-1] == "rate limited (username)"


def test_client_secret_guesses_are_limited_per_client_and_address(opened):
    """The token endpoint checks an argon2 hash per try: it is rate limited like passwords."""
    reg = opened(login_rate_per_username=3)
    client, secret = reg.auth.clients.add(roles=["facility-staff"], facility="F1", name="his")
    app = create_app(registry=reg)
    token = "/api/v1/auth/token"
    form = {"grant_type": "client_credentials", "client_id": client, "client_secret": "nope"}
    for i in range(3):
        assert peer(app, f"198.51.100.{i}").post(token, data=form).status_code == 401
    right = {**form, "client_secret": secret}
    limited = peer(app, "198.51.100.9").post(token, data=right)
    assert limited.status_code == 429 and "client" in limited.json()["detail"]
    reasons = [e["fields"].get("reason") for e in audit(reg, "auth.login-failed")]
    assert reasons[-1] == "rate limited"


def test_successful_sign_ins_do_not_count_against_the_username(opened):
    reg = opened(login_rate_per_username=2)
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    app = create_app(registry=reg)
    good = {"username": "asha", "password": PASSWORD}
    sign_in = lambda: TestClient(app).post(LOGIN, json=good).status_code  # noqa: E731
    assert wrong_login(TestClient(app)).status_code == 401
    assert [sign_in() for _ in range(4)] == [200] * 4
    assert wrong_login(TestClient(app)).status_code == 401
    assert sign_in() == 429  # two failures: the limit


def test_the_sign_in_page_has_the_username_limit_too(opened):
    reg = opened(login_rate_per_username=1)
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    app = create_app(registry=reg)
    assert wrong_login(peer(app, "198.51.100.1")).status_code == 401
    page = peer(app, "198.51.100.2").post(
        "/ui/login",
        data={"username": "asha", "password": PASSWORD},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert page.status_code == 429 and "registry_session" not in page.headers.get("set-cookie", "")


# -- 3. tokens of disabled users and clients ---------------------------------------------------
def _sign_in(http: TestClient, username: str = "asha", password: str = PASSWORD) -> str:
    resp = http.post(LOGIN, json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def _me(app: Any, token: str) -> Any:
    # a client without the session cookie: only the bearer token counts
    return TestClient(app).get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


def test_a_disabled_users_api_token_stops_working_at_once(opened):
    reg = opened()
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    app = create_app(registry=reg)
    token = _sign_in(TestClient(app))
    assert _me(app, token).json()["subject"] == "asha"
    reg.auth.users.set_disabled("asha", True)
    refused = _me(app, token)
    assert refused.status_code == 401 and "invalid_token" in refused.headers["www-authenticate"]
    assert "revoked" in refused.json()["detail"]
    assert audit(reg, "auth.token-refused")[-1]["fields"]["reason"] == "user disabled"
    # enabled again: the old token stays void, a new sign-in works
    reg.auth.users.set_disabled("asha", False)
    assert _me(app, token).status_code == 401
    assert _me(app, _sign_in(TestClient(app))).json()["subject"] == "asha"


def test_a_user_disabled_by_another_process_is_refused_within_a_second_or_two(opened, settings):
    reg = opened()
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    app = create_app(registry=reg)
    token = _sign_in(TestClient(app))
    assert _me(app, token).status_code == 200  # its standing is cached now
    other = open_registry(settings)  # `registry user disable asha` on the command line
    try:
        other.auth.users.set_disabled("asha", True)
    finally:
        other.close()
    deadline = time.monotonic() + 3
    while _me(app, token).status_code == 200:
        assert time.monotonic() < deadline, "still accepted 3 seconds after the disable"
        time.sleep(0.1)
    assert _me(app, token).status_code == 401


def test_a_new_password_ends_earlier_tokens_and_sessions_but_not_later_ones(opened):
    reg = opened()
    reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
    app = create_app(registry=reg)
    browser = TestClient(app)
    token = _sign_in(browser)
    assert browser.get("/api/v1/auth/me").json()["subject"] == "asha"  # the session cookie
    reg.auth.users.set_password("asha", "another long password")
    assert _me(app, token).status_code == 401
    assert browser.get("/api/v1/auth/me").json()["authenticated"] is False
    # a token issued right after the change (the same second) works
    fresh = _sign_in(TestClient(app), password="another long password")
    assert _me(app, fresh).json()["subject"] == "asha"
    assert "iat_ms" in jwt.decode(fresh, options={"verify_signature": False})


def test_a_disabled_clients_token_stops_working_at_once(opened):
    reg = opened()
    client, secret = reg.auth.clients.add(roles=["facility-staff"], facility="F1", name="his")
    app = create_app(registry=reg)
    form = {
        "grant_type": "client_credentials",
        "client_id": client["clientId"],
        "client_secret": secret,
    }
    token = TestClient(app).post("/api/v1/auth/token", data=form).json()["access_token"]
    assert _me(app, token).json()["kind"] == "client"
    reg.auth.clients.set_disabled(client["clientId"], True)
    assert _me(app, token).status_code == 401


def test_tokens_of_callers_without_a_user_still_work(opened):
    """The testing kit's tokens name users that do not exist: only signature and time count."""
    reg = opened()
    app = create_app(registry=reg)
    resp = TestClient(app).get("/api/v1/auth/me", headers=auth_headers(reg, subject="nobody"))
    assert resp.json()["subject"] == "nobody"


# -- 4. owner-only files -----------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _check_private_files(data: Path) -> None:
    assert _mode(data) == 0o700
    db = data / "registry.db"
    assert _mode(db) == 0o600
    # a write makes SQLite's write-ahead log and shared memory file beside the database
    for suffix in ("-wal", "-shm"):
        side = Path(f"{db}{suffix}")
        assert side.exists() and _mode(side) == 0o600, suffix
    for name in ("auth-secret.key", "data-keys.json"):
        assert _mode(data / name) == 0o600, name


@pytest.mark.parametrize("fresh", [False, pytest.param(True, marks=pytest.mark.fresh_migrations)])
def test_the_data_folder_and_the_sqlite_files_are_owner_only(tmp_path, umask_022, fresh):
    data = tmp_path / "deployment" / "data"
    reg = open_registry(Settings(data_dir=data, load_entrypoints=False, inline_worker=False))
    try:
        headers = auth_headers(reg)
        with TestClient(create_app(registry=reg), headers=headers) as http:
            resp = http.post(
                "/api/v1/vaccine", json={"name": "Covaxin", "manufacturer": "Bharat Biotech"}
            )
            assert resp.status_code in (201, 422), resp.text  # either way the database wrote
            reg.auth.users.add("asha", roles=["system-admin"], password=PASSWORD)
            # while connections are open: the last one to close removes -wal and -shm
            _check_private_files(data)
    finally:
        reg.close()


def test_the_data_folder_is_owner_only_on_postgresql_too(settings, umask_022):
    data = settings.data_dir / "nested"
    reg = open_registry(settings.with_(data_dir=data))
    try:
        assert _mode(data) == 0o700
        if reg.db.dialect == "sqlite":
            assert _mode(Path(str(reg.db.engine.url.database))) == 0o600
    finally:
        reg.close()


def test_an_existing_folder_and_database_file_keep_their_modes(tmp_path, umask_022, caplog):
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    db = data / "registry.db"
    db.touch(mode=0o640)
    os.chmod(db, 0o640)
    reg = open_registry(Settings(data_dir=data, load_entrypoints=False, inline_worker=False))
    reg.close()
    assert _mode(data) == 0o750 and _mode(db) == 0o640
    assert "can be read by other users" in caplog.text


# -- 5. names matched whole ----------------------------------------------------------------------
def test_a_path_with_a_newline_after_an_entity_name_is_refused(opened):
    reg = opened()
    with TestClient(create_app(registry=reg), headers=auth_headers(reg)) as http:
        assert http.get("/api/v1/facility").status_code == 200
        for path in ("/api/v1/facility%0A", "/api/v1/facility%0D%0A", "/api/v1/auth/me%0A"):
            resp = http.get(path)
            assert resp.status_code == 400, path
            assert resp.headers["content-type"].startswith("application/problem+json")


def test_a_field_name_with_a_newline_is_refused_in_a_query(opened):
    reg = opened()
    with TestClient(create_app(registry=reg), headers=auth_headers(reg)) as http:
        resp = http.get("/api/v1/facility", params={"name\n": "x"})
        assert resp.status_code == 400
        search = http.post("/api/v1/facility/search", json={"filters": {"name\n": {"eq": "x"}}})
        assert search.status_code == 400


def test_a_username_with_a_trailing_newline_is_refused(opened):
    reg = opened()
    with pytest.raises(Invalid):
        reg.auth.users.add("asha\n", roles=["system-admin"], password=PASSWORD)
    # through the users page, where the name comes from a form
    with TestClient(create_app(registry=reg), headers=auth_headers(reg)) as http:
        resp = http.post(
            "/ui/users",
            data={"username": "ravi\n", "password": PASSWORD, "roles": "system-admin"},
            headers={"Origin": "http://testserver"},
            follow_redirects=False,
        )
        assert 400 <= resp.status_code < 500, resp.status_code
    with reg.db.engine.connect() as conn:
        names = conn.execute(sa.text("SELECT username FROM registry_users")).scalars().all()
    assert names == []


def test_a_field_name_with_a_trailing_newline_is_refused_by_the_schema_form():
    doc = {"properties": {}}
    _, errors = apply_spec(doc, FieldSpec(name="age\n", type="integer"), editing=False)
    assert "name" in errors
    _, fine = apply_spec(doc, FieldSpec(name="age", type="integer"), editing=False)
    assert "name" not in fine
