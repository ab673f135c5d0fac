"""What every browser-facing response and request goes through, besides authentication.

- `SecurityHeaders` (the outermost middleware) adds to every response `X-Content-Type-Options:
  nosniff`, `X-Frame-Options: DENY` and `Referrer-Policy: same-origin`, and to every HTML page
  `Content-Security-Policy` (`PAGE_CSP`: scripts, styles and everything else from this origin
  only, no inline script or style, no framing). A page whose inline scripts are known when the
  app is built (Swagger UI's `/docs`) gets their `sha256-` hashes added for that path only.
- `CrossSiteGuard` (inside `AuthMiddleware`) refuses unsafe requests (POST, PUT, PATCH, DELETE,
  ...) authenticated by the pages' session cookie when they cannot be shown to come from this
  site's own pages: a foreign or opaque (`null`) `Origin`, a foreign `Referer` when there is no
  `Origin`, or neither header. Requests authenticated by an `Authorization` header are not
  touched (a page of another site cannot send one without CORS, which the registry does not
  allow), nor are anonymous requests (the pages' form posts check them: `same_origin`).

This site's origin is the scheme of the request as the ASGI server reports it and its `Host`
header. Behind a TLS proxy the server must be told the original scheme: uvicorn trusts
`X-Forwarded-Proto` from the addresses in `--forwarded-allow-ips` / `FORWARDED_ALLOW_IPS`
(default 127.0.0.1); the app never reads that header itself, so a client cannot forge it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from open_registry.core.auth.deps import principal_of
from open_registry.core.errors import PROBLEM_JSON, problem_body
from open_registry.core.responses import JSONResponse

log = logging.getLogger("registry.security")

#: methods that never change anything (RFC 9110 "safe"); every other one is checked
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_PAGE_DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def _policy(directives: Mapping[str, str]) -> str:
    return "; ".join(f"{name} {value}" for name, value in directives.items())


#: the Content-Security-Policy of every HTML page
PAGE_CSP = _policy(_PAGE_DIRECTIVES)

#: added to every response (HTML or not)
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # not "no-referrer": with it browsers send `Origin: null` on the pages' own form posts
    "Referrer-Policy": "same-origin",
}

_DEFAULT_PORTS = {"http": 80, "https": 443}
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)


def script_hashes(html: str | bytes | memoryview) -> list[str]:
    """The CSP source expressions (`'sha256-...'`) of the inline scripts of a fixed page."""
    text = html if isinstance(html, str) else bytes(html).decode()
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(text)
    ]


def page_csp(extra_scripts: Iterable[str] = ()) -> str:
    """`PAGE_CSP`, with `extra_scripts` (hash sources) allowed as scripts too."""
    extra = " ".join(extra_scripts)
    if not extra:
        return PAGE_CSP
    return _policy({**_PAGE_DIRECTIVES, "script-src": f"'self' {extra}"})


# -- same origin --------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL or origin; None for `null` or anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _shown(origin: tuple[str, str, int] | None) -> str:
    if origin is None:
        return "?"
    scheme, host, port = origin
    return f"{scheme}://{host}" + ("" if _DEFAULT_PORTS[scheme] == port else f":{port}")


def cookie_authenticated(request: Request) -> bool:
    """The request is someone's only because of the session cookie the browser attached: no
    `Authorization` header, and the cookie named a signed-in user (`AuthMiddleware`)."""
    return "authorization" not in request.headers and principal_of(request).authenticated


def cross_site(request: Request) -> str | None:
    """Why `request` cannot be shown to come from one of this site's pages; None when it can.

    `Origin` must be this site's origin (scheme, host and port); `null`, which browsers send
    from sandboxed frames, `data:` pages and after cross-site redirects, never is. Without
    `Origin`, the origin of `Referer`. Without either (never a current browser's POST: they all
    send `Origin`), the request is refused when the session cookie authenticates it.
    """
    ours = _origin(str(request.url))
    origin = request.headers.get("origin")
    if origin is not None:
        theirs = _origin(origin)
        if theirs is None:
            return f"Origin {origin[:100]!r} is not an http(s) origin"
        if ours is None or theirs != ours:
            return f"Origin {_shown(theirs)} is not {_shown(ours)}"
        return None
    referer = request.headers.get("referer")
    if referer:
        theirs = _origin(referer)
        if ours is None or theirs is None or theirs != ours:
            return f"Referer {_shown(theirs)} is not {_shown(ours)}"
        return None
    if cookie_authenticated(request):
        return "neither Origin nor Referer on a request signed in by the session cookie"
    return None


def refused(request: Request, reason: str) -> None:
    """Log a refused cross-site request (the reason names the origins, to diagnose proxies)."""
    log.warning("cross-site %s %s refused: %s", request.method, request.url.path, reason)


# -- middlewares ----------------------------------------------------------------------------------


class CrossSiteGuard:
    """Refuses unsafe requests authenticated by the session cookie that come from another site
    (install it inside `AuthMiddleware`: it reads the principal that one found)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        reason = cross_site(request) if cookie_authenticated(request) else None
        if reason is None:
            await self.app(scope, receive, send)
            return
        refused(request, reason)
        await self._refusal(request)(scope, receive, send)

    def _refusal(self, request: Request) -> Any:
        """The UI's translated error page under its prefix, problem+json elsewhere."""
        ui = getattr(getattr(request.scope.get("app"), "state", None), "ui", None)
        path = request.url.path
        if ui is not None and (path == ui.prefix or path.startswith(ui.prefix + "/")):
            page = ui.page(request)
            return ui.error_page(page, 403, page.t("error.forbidden"))
        resp = JSONResponse(
            problem_body(
                403,
                "Forbidden",
                "cross-site request refused: a request signed in by the session cookie must "
                "come from this site's own pages (Origin)",
                slug="forbidden",
            ),
            status_code=403,
        )
        resp.headers["content-type"] = PROBLEM_JSON
        return resp


class SecurityHeaders:
    """Adds `COMMON_HEADERS` to every response and `Content-Security-Policy` to HTML ones
    (install it last: the outermost middleware sees every response the app makes).

    `script_hashes` maps a path to the hash sources of the inline scripts of its page
    (`script_hashes(html)`), for fixed pages the project does not render itself.
    A response that already has a header keeps its own value.
    """

    def __init__(self, app: ASGIApp, script_hashes: Mapping[str, Iterable[str]] | None = None):
        self.app = app
        self.policies = {
            path: page_csp(h).encode("latin-1") for path, h in (script_hashes or {}).items()
        }
        self.page_csp = PAGE_CSP.encode("latin-1")
        self.common = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                       for k, v in COMMON_HEADERS.items()]  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self.with_headers(scope, message.get("headers") or ())
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def with_headers(self, scope: Scope, headers: Iterable[tuple[bytes, bytes]]) -> list[Any]:
        """`headers` (a response's, raw) and the ones this adds that it does not have."""
        out = list(headers)
        have = {name.lower() for name, _ in out}
        out.extend(pair for pair in self.common if pair[0] not in have)
        if b"content-security-policy" not in have:
            ctype = next((v for n, v in out if n.lower() == b"content-type"), b"")
            if ctype.split(b";")[0].strip().lower() == b"text/html":
                policy = self.policies.get(scope["path"], self.page_csp)
                out.append((b"content-security-policy", policy))
        return out


__all__ = [
    "COMMON_HEADERS",
    "PAGE_CSP",
    "CrossSiteGuard",
    "SecurityHeaders",
    "cookie_authenticated",
    "cross_site",
    "page_csp",
    "script_hashes",
]
