"""What every page handler takes from a request: its locale and translator (`Page`), the
submitted form, the same-origin check of a form post, and the "sign in first" signal. Kept apart
from the page modules so that each of them can use it without importing another."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import Request

from open_registry.core.errors import BadRequest
from open_registry.core.i18n import Translator
from open_registry.core.web_security import cross_site, refused

FORM_TYPE = "application/x-www-form-urlencoded"


class SignInFirst(Exception):
    """An anonymous visitor asked for a page that needs a signed-in user."""


@dataclass
class Page:
    """One request's view of the UI: its locale and translator."""

    request: Request
    locale: str
    t: Translator


async def read_form(request: Request, max_bytes: int) -> list[tuple[str, str]]:
    """The submitted `application/x-www-form-urlencoded` body as (name, value) pairs."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != FORM_TYPE:
        raise BadRequest(f"send the form as {FORM_TYPE}")
    body = await request.body()
    if len(body) > max_bytes:
        raise BadRequest(f"the form is larger than {max_bytes} bytes")
    return parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)


def same_origin(request: Request) -> bool:
    """Whether a form post may be from one of this site's pages: its `Origin` (else `Referer`)
    is this site's scheme, host and port, never `null`; with neither header, only when the
    session cookie does not sign it in (`web_security.cross_site`; refusals are logged)."""
    reason = cross_site(request)
    if reason is not None:
        refused(request, reason)
    return reason is None
