"""Bounded work for anonymous verification: what `POST /api/v1/verify` and
`POST /credentials/verify` accept before any JSON-LD expansion or canonicalization starts.

Anyone may call the verify endpoints, and verifying a credential issued in this registry's name
(its issuer DID and verification method are public) runs pyld and RDFC-1.0 over whatever the
document holds, whose cost grows with its size, nesting and blank nodes (a 5,000 blank-node
document took 9 s of CPU). So a document is refused, with a 4xx naming the limit, when it is:

- larger than `max_verify_bytes` (the body, as streamed in; and what a QR payload inflates to);
- nested deeper than `max_verify_depth` (objects and arrays; also pyld and the checks recurse);
- made of more than `max_verify_nodes` JSON values in all;
- holding an array longer than `max_verify_array`;
- holding more than `max_verify_blank_nodes` blank nodes: objects without `id`/`@id` outside
  `@context`, and distinct `_:` labels;
- a QR code text (`text`, `qr`) longer than `max_verify_text` characters (a QR code holds at
  most 7,089 digits or 4,296 base45 characters).

The checks are iterative and stop at the first limit crossed, so refusing costs at most
`max_verify_nodes` steps whatever the input; the body is read in chunks and reading stops past
the size limit. The settings live in `[plugins.certificates]` (see `config.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

import orjson

from open_registry.core.errors import (
    BadRequest,
    PayloadTooLarge,
    RegistryError,
    UnsupportedMediaType,
)

#: content types a verify body may be sent as (as the generated API: JSON and any `+json`)
JSON_TYPES = ("application/json",)


@dataclass(frozen=True)
class VerifyLimits:
    """The limits on one verify request; defaults fit a credential (1-3 KB, 60-100 values,
    6-8 levels, under 10 blank nodes) many times over."""

    #: the body (and an inflated QR payload), in bytes
    max_bytes: int = 64 * 1024
    #: nesting of objects and arrays (the body's top level is level 1)
    max_depth: int = 32
    #: JSON values (objects, arrays, strings, numbers, booleans, nulls) in all
    max_nodes: int = 300
    #: elements of any one array
    max_array: int = 256
    #: blank nodes: objects without `id` (outside `@context`) plus distinct `_:` labels
    max_blank_nodes: int = 32
    #: characters of a QR code's text (`text`: shc:/, HC1:, a JWS) or of `qr` (base64)
    max_text: int = 8_192

    @classmethod
    def from_config(cls, config: Any) -> VerifyLimits:
        """The limits a `CertificatesConfig` sets (`max_verify_*`)."""
        return cls(
            max_bytes=config.max_verify_bytes,
            max_depth=config.max_verify_depth,
            max_nodes=config.max_verify_nodes,
            max_array=config.max_verify_array,
            max_blank_nodes=config.max_verify_blank_nodes,
            max_text=config.max_verify_text,
        )


#: the settings behind each limit (`[plugins.certificates]` keys), for messages
SETTINGS = {
    "max_bytes": "max_verify_bytes",
    "max_depth": "max_verify_depth",
    "max_nodes": "max_verify_nodes",
    "max_array": "max_verify_array",
    "max_blank_nodes": "max_verify_blank_nodes",
    "max_text": "max_verify_text",
}
DEFAULTS = VerifyLimits()


class LimitExceeded(ValueError):
    """A document over one of the limits; the message names the limit's setting."""

    def __init__(self, message: str, *, setting: str, pointer: str = "", too_large: bool = False):
        super().__init__(f"{message} (limit {setting})")
        self.setting = setting
        self.pointer = pointer
        self.too_large = too_large  # a size limit: HTTP 413, otherwise 400

    def http_error(self) -> RegistryError:
        """The problem to answer with: 413 for sizes, 400 for the document's shape."""
        errors = [{"pointer": self.pointer, "message": str(self), "keyword": self.setting}]
        cls = PayloadTooLarge if self.too_large else BadRequest
        return cls(str(self), errors=errors)


def _pointer(path: tuple[Any, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def check_document(document: Any, limits: VerifyLimits = DEFAULTS) -> None:
    """Raise `LimitExceeded` when `document` (parsed JSON) is deeper, bigger, wider or holds
    more blank nodes than `limits` allow. Iterative; at most `max_nodes` steps."""
    max_depth, max_nodes, max_array = limits.max_depth, limits.max_nodes, limits.max_array
    max_blank = limits.max_blank_nodes
    blank = 0
    labels: set[str] = set()
    counted = 1
    # (value, path, depth of the containers around it, inside @context)
    stack: list[tuple[Any, tuple[Any, ...], int, bool]] = [(document, (), 0, False)]
    while stack:
        value, path, depth, in_context = stack.pop()
        if isinstance(value, str):
            if value.startswith("_:") and not in_context:
                labels.add(value)
                if blank + len(labels) > max_blank:
                    raise _too_many_blank_nodes(max_blank, path)
            continue
        if isinstance(value, dict):
            items: Any = value.items()
            size = len(value)
            if not in_context and "id" not in value and "@id" not in value:
                blank += 1
                if blank + len(labels) > max_blank:
                    raise _too_many_blank_nodes(max_blank, path)
        elif isinstance(value, list):
            size = len(value)
            if size > max_array:
                raise LimitExceeded(
                    f"an array holds {size} elements, more than {max_array}",
                    setting=SETTINGS["max_array"],
                    pointer=_pointer(path),
                )
            items = enumerate(value)
        else:
            continue
        depth += 1
        if depth > max_depth:
            raise LimitExceeded(
                f"document nests deeper than {max_depth} levels",
                setting=SETTINGS["max_depth"],
                pointer=_pointer(path),
            )
        counted += size
        if counted > max_nodes:
            raise LimitExceeded(
                f"document holds more than {max_nodes} values",
                setting=SETTINGS["max_nodes"],
                pointer=_pointer(path),
            )
        for key, item in items:
            if isinstance(key, str) and key.startswith("_:") and not in_context:
                labels.add(key)
            stack.append((item, (*path, key), depth, in_context or key == "@context"))
        if blank + len(labels) > max_blank:
            raise _too_many_blank_nodes(max_blank, path)


def _too_many_blank_nodes(limit: int, path: tuple[Any, ...]) -> LimitExceeded:
    return LimitExceeded(
        f"document holds more than {limit} blank nodes (objects without an id, _: labels)",
        setting=SETTINGS["max_blank_nodes"],
        pointer=_pointer(path),
    )


def check_text(value: str, limits: VerifyLimits = DEFAULTS, *, pointer: str = "") -> None:
    """Refuse a QR code text (or base64 QR payload) longer than `max_text` characters."""
    if len(value) > limits.max_text:
        raise LimitExceeded(
            f"the text is {len(value)} characters, more than {limits.max_text}",
            setting=SETTINGS["max_text"],
            pointer=pointer,
            too_large=True,
        )


def body_limit(limits: VerifyLimits, max_body_bytes: int) -> tuple[int, str]:
    """The size limit of a verify body and the setting that sets it (the smaller of the two)."""
    if limits.max_bytes <= max_body_bytes:
        return limits.max_bytes, SETTINGS["max_bytes"]
    return max_body_bytes, "max_body_bytes"


def parse_json(body: bytes, limits: VerifyLimits = DEFAULTS) -> Any:
    """Parse a verify body (orjson: its own nesting limit is 1,024, never a RecursionError),
    then `check_document`. `BadRequest` for what is not JSON, `LimitExceeded` past a limit."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower() or "depth" in str(exc).lower():
            raise LimitExceeded(
                f"document nests deeper than {limits.max_depth} levels",
                setting=SETTINGS["max_depth"],
            ) from None
        raise BadRequest(
            f"the body is not valid JSON: {exc}",
            errors=[{"pointer": "", "message": str(exc), "keyword": "json"}],
        ) from None
    check_document(document, limits)
    return document


def check_size(data: bytes, limits: VerifyLimits = DEFAULTS, *, pointer: str = "") -> None:
    """Refuse a document (an inflated QR payload, as JSON) larger than `max_bytes`."""
    if len(data) > limits.max_bytes:
        raise LimitExceeded(
            f"the document is larger than {limits.max_bytes} bytes",
            setting=SETTINGS["max_bytes"],
            pointer=pointer,
            too_large=True,
        )


async def read_body(
    headers: Any, chunks: AsyncIterable[bytes], limits: VerifyLimits, max_body_bytes: int
) -> Any:
    """A verify request's body, parsed and checked: the content type, the declared and the
    actual size (read in chunks, stopping past the limit), JSON syntax, then the document's
    shape (`check_document`). Raises the registry's 4xx errors."""
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as application/json (got {ctype or 'no content type'})"
        )
    limit, setting = body_limit(limits, max_body_bytes)
    too_large = LimitExceeded(
        f"the body is larger than {limit} bytes", setting=setting, too_large=True
    )
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large.http_error()
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            raise too_large.http_error()
    try:
        return parse_json(bytes(buffer), limits)
    except LimitExceeded as exc:
        raise exc.http_error() from None
