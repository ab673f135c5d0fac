"""`/api/v1/auth/...`: sign in with a password or a one-time code, client credentials, who am I,
sign out."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from open_registry.core.api import API_PREFIX, JSONResponse, read_json
from open_registry.core.auth import rules
from open_registry.core.auth.deps import Auth, client_address, principal_of
from open_registry.core.auth.notify import send
from open_registry.core.auth.otp import Outcome
from open_registry.core.auth.principal import Principal
from open_registry.core.auth.ratelimit import TooManyRequests
from open_registry.core.auth.tokens import SESSION_COOKIE
from open_registry.core.bodies import read_limited
from open_registry.core.errors import BadRequest, Invalid, RegistryError, Unauthorized

AUTH = f"{API_PREFIX}/auth"


class InvalidClient(Unauthorized):
    slug = "invalid-client"


#: sign-in routes: anyone may try, within the rate limits (per address and per username)
SIGN_IN = rules.public("signing in; bounded by the rate limits")


def _text(body: Any, name: str, limit: int = 200) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Invalid(
            f"{name} is required",
            errors=[{"pointer": f"/{name}", "message": "required text", "keyword": "required"}],
        )
    return value


def set_session(auth: Auth, request: Request, response: Response, p: Principal) -> None:
    """The pages' session cookie: signed, HttpOnly, SameSite=Lax, Secure over HTTPS."""
    issued = auth.tokens.issue_session(p)
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        max_age=issued.expires_in,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def signed_in(
    auth: Auth,
    request: Request,
    p: Principal,
    extra: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    """A response carrying a fresh token for `p` (plus `extra` fields) and the pages' session
    cookie: after a sign-in, or when what the caller is changed (a recipient who enrolled)."""
    resp = JSONResponse({**(extra or {}), **token_body(auth, p)}, status_code=status)
    set_session(auth, request, resp, p)
    return resp


def token_body(auth: Auth, p: Principal) -> dict[str, Any]:
    issued = auth.tokens.issue(p)
    return {"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in}


def username_key(username: str) -> str:
    """The rate counter of a username's failed password sign-ins (hashed: any length, any
    characters, the same key size)."""
    return "login-user:" + hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()


def password_login(auth: Auth, username: str, password: str, address: str) -> Principal:
    """Check a password sign-in, audited either way. Rate limited per client address
    (`login_rate_per_address` sign-ins) and per username (`login_rate_per_username` failed
    ones, from any address: an attacker who changes address still gets that many guesses);
    a limited username is refused even with the right password, so the limit is no oracle."""
    s = auth.settings
    window = s.otp_rate_window_seconds
    per_user = username_key(username)
    limits = (
        (
            "address",
            f"login-addr:{address}",
            s.login_rate_per_address,
            "sign-in attempts from this address",
        ),
        # counted before the password is checked (so parallel guesses cannot overshoot the
        # limit), and given back below when it is right
        ("username", per_user, s.login_rate_per_username, "failed sign-ins for this username"),
    )
    for limit, key, most, what in limits:
        try:
            auth.limiter.hit(key, most, window, what)
        except TooManyRequests:
            auth.event(
                "auth.login-failed",
                via="password",
                reason=f"rate limited ({limit})",
                username=username[:100],
                address=address,
            )
            raise
    p = auth.users.authenticate(username, password)
    if p is None:
        auth.event("auth.login-failed", via="password", username=username[:100], address=address)
        raise Unauthorized("wrong username or password, or the user is disabled")
    auth.limiter.refund(per_user)
    auth.event("auth.login", actor=p.actor, via="password", address=address)
    return p


def client_login(auth: Auth, client_id: str, secret: str, address: str) -> Principal | None:
    """Check client credentials (an argon2 hash: costly), rate limited like passwords: per
    address (`login_rate_per_address` attempts) and per client id (`login_rate_per_username`
    failed ones); a limited client is refused even with the right secret."""
    s = auth.settings
    window = s.otp_rate_window_seconds
    per_client = username_key(f"client:{client_id}")
    limits = (
        (f"login-addr:{address}", s.login_rate_per_address, "sign-in attempts from this address"),
        (per_client, s.login_rate_per_username, "failed sign-ins for this client"),
    )
    for key, most, what in limits:
        try:
            auth.limiter.hit(key, most, window, what)
        except TooManyRequests:
            auth.event(
                "auth.login-failed",
                via="client_credentials",
                reason="rate limited",
                client=client_id[:64],
                address=address,
            )
            raise
    p = auth.clients.authenticate(client_id, secret)
    if p is not None:
        auth.limiter.refund(per_client)
    return p


def otp_send(auth: Auth, channel: str, to: Any, address: str) -> None:
    """Ask for a sign-in code and send it when the identifier may have one (rate limited,
    audited; the same outcome either way, so callers answer alike)."""
    norm, code = auth.otp.request(channel, to, address)
    if code is not None:
        minutes = max(1, auth.settings.otp_ttl_seconds // 60)
        send(
            auth.settings,
            auth.registry.pm,
            auth.registry,
            channel,
            norm,
            "otp",
            {"code": code, "minutes": minutes},
        )
    auth.event("auth.otp-requested", channel=channel, address=address)


def otp_login(auth: Auth, channel: str, to: Any, code: Any, address: str) -> Outcome:
    """Check a sign-in code (rate limited, audited either way, a sign-up audited too)."""
    try:
        outcome = auth.otp.verify(channel, to, code, address)
    except RegistryError as exc:
        if exc.status in (401, 429):
            auth.event(
                "auth.login-failed", via="otp", channel=channel, reason=exc.detail, address=address
            )
        raise
    p = outcome.principal
    assert p is not None
    if outcome.reason == "signup":
        auth.event("auth.signup", actor=p.actor, channel=channel, address=address)
    auth.event("auth.login", actor=p.actor, via="otp", address=address)
    return outcome


def auth_routes(auth: Auth) -> APIRouter:
    router = APIRouter(tags=["auth"])
    max_bytes = 16_384

    @router.post(
        f"{AUTH}/login",
        summary="Sign in with username and password",
        dependencies=[Depends(SIGN_IN)],
    )
    async def login(request: Request) -> Response:
        body = await read_json(request, max_bytes)
        username, password = _text(body, "username", 100), _text(body, "password", 1000)
        p = await run_in_threadpool(
            password_login, auth, username, password, client_address(request)
        )
        return signed_in(auth, request, p)

    @router.post(
        f"{AUTH}/otp",
        status_code=202,
        summary="Send a one-time sign-in code",
        dependencies=[Depends(SIGN_IN)],
    )
    async def otp_request(request: Request) -> Response:
        body = await read_json(request, max_bytes)
        channel = _text(body, "channel", 10)
        await run_in_threadpool(otp_send, auth, channel, body.get("to"), client_address(request))
        # the same answer whether or not the identifier belongs to someone
        return JSONResponse(
            {
                "detail": "if this identifier belongs to a user, a code was sent",
                "expires_in": auth.settings.otp_ttl_seconds,
            },
            status_code=202,
        )

    @router.post(
        f"{AUTH}/otp/verify",
        summary="Sign in with a one-time code",
        dependencies=[Depends(SIGN_IN)],
    )
    async def otp_verify(request: Request) -> Response:
        body = await read_json(request, max_bytes)
        channel = _text(body, "channel", 10)
        outcome = await run_in_threadpool(
            otp_login, auth, channel, body.get("to"), body.get("code"), client_address(request)
        )
        p = outcome.principal
        assert p is not None
        extra = {"signedUp": True} if outcome.reason == "signup" else {}
        return signed_in(auth, request, p, extra)

    @router.post(
        f"{AUTH}/token",
        summary="OAuth2 token endpoint (grant_type=client_credentials)",
        dependencies=[Depends(SIGN_IN)],
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "grant_type": {"const": "client_credentials"},
                                "client_id": {"type": "string"},
                                "client_secret": {"type": "string"},
                            },
                            "required": ["grant_type"],
                        }
                    }
                }
            }
        },
    )
    async def token(request: Request) -> Response:
        raw = await read_limited(request, max_bytes)
        form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        if form.get("grant_type") != "client_credentials":
            raise BadRequest(
                "grant_type must be client_credentials",
                error="unsupported_grant_type",
                errors=[{"pointer": "/grant_type", "message": "unsupported", "keyword": "enum"}],
            )
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                pair = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidClient("malformed Basic credentials", error="invalid_client") from None
            client_id, _, secret = pair.partition(":")
        address = client_address(request)
        p = await run_in_threadpool(client_login, auth, client_id, secret, address)
        if p is None:
            await run_in_threadpool(
                auth.event,
                "auth.login-failed",
                via="client_credentials",
                client=client_id[:64],
                address=address,
            )
            raise InvalidClient(
                "unknown client, wrong secret or disabled client",
                error="invalid_client",
                headers={"WWW-Authenticate": 'Basic realm="registry"'},
            )
        await run_in_threadpool(
            auth.event, "auth.login", actor=p.actor, via="client_credentials", address=address
        )
        return JSONResponse(token_body(auth, p), headers={"Cache-Control": "no-store"})

    @router.get(
        f"{AUTH}/me",
        summary="Who the request is authenticated as",
        dependencies=[Depends(rules.public("answers only about the caller; anonymous: nobody"))],
    )
    async def me(request: Request) -> Response:
        p = principal_of(request)
        return JSONResponse(
            {
                "authenticated": p.authenticated,
                "kind": p.kind,
                "subject": p.subject,
                "roles": sorted(p.roles),
                "facility": p.facility,
                "recipient": p.recipient,
            }
        )

    @router.post(
        f"{AUTH}/logout",
        status_code=204,
        summary="Sign out of the pages",
        dependencies=[Depends(rules.public("only clears the caller's own session cookie"))],
    )
    async def logout() -> Response:
        resp = Response(status_code=204)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    return router
