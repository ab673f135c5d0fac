"""Exceptions that carry their HTTP status, and the one error body every route returns.

The body is RFC 9457 `application/problem+json`: `type`, `title`, `status`, `detail`, and for
validation failures `errors: [{pointer, message, keyword}]` listing every failing field.
"""

from __future__ import annotations

from typing import Any

PROBLEM_JSON = "application/problem+json"


class RegistryError(Exception):
    """Base class: an error a client can be told about."""

    status = 500
    slug = "internal"
    title = "Internal error"

    def __init__(
        self,
        detail: str = "",
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        return problem_body(
            self.status, self.title, self.detail, slug=self.slug, errors=self.errors, **self.extra
        )


class BadRequest(RegistryError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class Unauthorized(RegistryError):
    status = 401
    slug = "unauthorized"
    title = "Authentication required"


class Forbidden(RegistryError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(RegistryError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(RegistryError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class PreconditionFailed(RegistryError):
    status = 412
    slug = "precondition-failed"
    title = "Precondition failed"


class PayloadTooLarge(RegistryError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(RegistryError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class Invalid(RegistryError):
    status = 422
    slug = "validation"
    title = "Validation failed"


class LookupUnavailable(RegistryError):
    """An external registry could not answer (unreachable, timed out, broken reply): unlike a
    "not found" (None), it says nothing about the person; try again later."""

    status = 503
    slug = "lookup-unavailable"
    title = "External registry unavailable"


class StartupError(Exception):
    """The app cannot start (broken schema, database out of date); the message says what to do."""


def problem_body(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The problem+json body for any error."""
    body: dict[str, Any] = {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return body
