"""Reading request bodies within a size limit, as they arrive (never the whole body first)."""

from __future__ import annotations

from starlette.requests import Request

from open_registry.core.errors import PayloadTooLarge


async def read_limited(request: Request, max_bytes: int, setting: str = "max_body_bytes") -> bytes:
    """The body, refused with 413 naming `setting` as soon as more than `max_bytes` arrived (or
    at once when `Content-Length` says so); a body without a length is never held past it."""
    declared = request.headers.get("content-length")
    too_large = f"the body is larger than {max_bytes} bytes (limit {setting})"
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(too_large)
        chunks.append(chunk)
    return b"".join(chunks)
