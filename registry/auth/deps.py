"""Authentication of every request, and what routes ask about it.

`AuthMiddleware` reads an `Authorization: Bearer` token (ours, or the OpenID Connect provider's
when its issuer is configured) or the pages' session cookie, and puts the caller's `Principal`
in `request.state.principal` (its audit name in `request.state.actor`). A request without either
is anonymous; one with a bad token is answered 401 and the refusal audited. Routes then ask
`principal_of(request)` and the entity's `Access`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import jwt
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from open_registry.core import storage
from open_registry.core.audit import chain as audit
from open_registry.core.auth.access import Access, Policy
from open_registry.core.auth.addresses import ClientAddresses
from open_registry.core.auth.clients import Clients
from open_registry.core.auth.oidc import OidcVerifier
from open_registry.core.auth.otp import OneTimeCodes
from open_registry.core.auth.principal import ANONYMOUS, Principal
from open_registry.core.auth.ratelimit import RateLimiter
from open_registry.core.auth.standing import Standing
from open_registry.core.auth.tokens import SESSION_COOKIE, TokenRefused, Tokens
from open_registry.core.auth.users import Users
from open_registry.core.errors import PROBLEM_JSON, problem_body
from open_registry.core.responses import JSONResponse

log = logging.getLogger("registry.auth")

#: token refusals audited per minute and process at most (the rest are only logged), so a flood
#: of bad tokens cannot flood the audit chain
REFUSALS_PER_MINUTE = 60


class Auth:
    """Everything about callers for one registry: tokens, users, clients, codes, OIDC, rules."""

    def __init__(self, registry: Any):
        s = registry.settings
        self.registry = registry
        self.settings = s
        self.tokens = Tokens(s)
        self.standing = Standing(registry.db)
        self.users = Users(registry.db, on_revoke=self.standing.forget)
        self.clients = Clients(registry.db, on_revoke=self.standing.forget)
        self.addresses = ClientAddresses(s.forwarded_allow_ips, s.forwarded_header)
        self.limiter = RateLimiter(registry.db.engine, registry.db.metadata.tables["registry_rate"])
        self.otp = OneTimeCodes(s, self.users, self.limiter)
        self.oidc = OidcVerifier(s) if s.oidc_issuer else None
        self.policy = Policy()
        self._lock = threading.Lock()
        self._window = (0.0, 0)

    def close(self) -> None:
        if self.oidc is not None:
            self.oidc.http.close()

    def access(self, entity_name: str) -> Access:
        """The access rules of an entity as loaded now."""
        return self.policy(self.registry.services[entity_name].entity)

    # -- tokens ------------------------------------------------------------------------------
    def bearer(self, token: str) -> Principal:
        """The principal of a bearer token, ours (whose user or client must still be enabled,
        see `Standing`) or the OIDC provider's; `TokenRefused`."""
        if self.oidc is not None:
            try:
                unverified = jwt.decode(token, options={"verify_signature": False})
                alg = jwt.get_unverified_header(token).get("alg")
            except jwt.PyJWTError:
                raise TokenRefused("malformed") from None
            if unverified.get("iss") == self.oidc.issuer or (
                unverified.get("iss") != self.tokens.issuer and alg != "HS256"
            ):
                return self.oidc.verify(token)
        p, issued_ms = self.tokens.verified(token)
        self.standing.check(p, issued_ms)
        return p

    def session(self, cookie: str) -> Principal | None:
        """The user of a session cookie, if it is valid, the user still enabled and the
        cookie issued after their last password change."""
        try:
            p, issued_ms = self.tokens.verified(cookie, session=True)
        except TokenRefused:
            return None
        if p.kind != "user":
            return None
        current = self.users.active(p.subject or "")
        if current is None:
            return None
        try:
            self.standing.check(p, issued_ms)
        except TokenRefused:
            return None
        return current

    # -- audit ---------------------------------------------------------------------------------
    def event(self, action: str, actor: str | None = None, **details: Any) -> None:
        """An audit entry for a sign-in or a refusal (never a secret or a private value)."""
        audit.record_event(self.registry.db.engine, action, actor=actor, details=details or None)

    def refusal(self, reason: str, address: str, path: str) -> None:
        now = time.monotonic()
        with self._lock:
            start, count = self._window
            if now - start > 60:
                start, count = now, 0
            count += 1
            self._window = (start, count)
        log.warning("token refused (%s) from %s for %s", reason, address, path)
        if count <= REFUSALS_PER_MINUTE:
            self.event("auth.token-refused", reason=reason, address=address, path=path)


def client_address(request: Request) -> str:
    """The client's address, as `AuthMiddleware` found it (`Auth.addresses`: behind a trusted
    reverse proxy, the address the proxy saw); rate limits and the audit log use it."""
    found = request.scope.get("state", {}).get("client_address")
    if found is not None:
        return str(found)
    return request.client.host if request.client else "unknown"


def principal_of(request: Request) -> Principal:
    """The caller of a request (anonymous when nothing authenticated it)."""
    return getattr(request.state, "principal", ANONYMOUS)


def _problem(
    status: int, title: str, detail: str, headers: dict[str, str], slug: str = "unauthorized"
) -> Any:
    resp = JSONResponse(
        problem_body(status, title, detail, slug=slug),
        status_code=status,
        headers=headers,
    )
    resp.headers["content-type"] = PROBLEM_JSON
    return resp


#: control characters (a `%0A` in a path arrives as a newline): no name or id holds one, and the
#: router's patterns end in `$`, which matches before a final newline, so `/api/v1/facility%0A`
#: would be served as `/api/v1/facility`
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _credentials(headers: Any) -> tuple[str | None, bool]:
    """The request's first `Authorization` header (as Starlette's `Headers.get` gives it), and
    whether it has a `Cookie` header, from the raw headers in one pass."""
    authorization, cookies = None, False
    for name, value in headers:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"cookie":
            cookies = True
    return authorization, cookies


class AuthMiddleware:
    """Puts the caller's principal on every HTTP request (pure ASGI: cheap per request)."""

    def __init__(self, app: ASGIApp, auth: Auth):
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _CONTROL.search(scope.get("path", "")):
            resp = _problem(
                400, "Bad request", "the path holds a control character", {}, "bad-request"
            )
            await resp(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["client_address"] = self.auth.addresses.of(scope)
        principal = ANONYMOUS
        header, cookies = _credentials(scope["headers"])
        try:
            if header is not None:
                kind, _, token = header.partition(" ")
                if kind.lower() != "bearer":
                    pass  # e.g. Basic for the token endpoint: that route reads it itself
                elif not token.strip():
                    raise TokenRefused("empty bearer token")
                elif self.auth.oidc is not None:
                    principal = await run_in_threadpool(self.auth.bearer, token.strip())
                else:
                    principal = await self._ours(token.strip())
            elif cookies and SESSION_COOKIE in (jar := Request(scope).cookies):
                found = await run_in_threadpool(self.auth.session, jar[SESSION_COOKIE])
                principal = found or ANONYMOUS
        except TokenRefused as exc:
            request = Request(scope)
            await run_in_threadpool(
                self.auth.refusal, exc.reason, client_address(request), request.url.path
            )
            resp = _problem(401, exc.title, exc.detail, exc.headers)
            await resp(scope, receive, send)
            return
        state["principal"] = principal
        state["actor"] = principal.actor
        # the caller's writes and reads, for the read replica's read-your-writes (storage)
        with storage.session(None if principal is ANONYMOUS else principal.actor):
            await self.app(scope, receive, send)

    async def _ours(self, token: str) -> Principal:
        """The principal of one of our tokens: checked here (signatures are cached), and in a
        thread when whether its user may still act needs the database."""
        p, issued_ms = self.auth.tokens.verified(token)
        standing = self.auth.standing
        if standing.known(p):
            standing.check(p, issued_ms)
        else:
            await run_in_threadpool(standing.check, p, issued_ms)
        return p
