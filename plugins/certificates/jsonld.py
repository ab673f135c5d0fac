"""Strict, offline JSON-LD processing for credentials: expand, to RDF, canonicalize (RDFC-1.0).

pyld as used here: every context from the shipped files (`loader.py`; the same loader is made
pyld's global default when this module is imported, and is passed on every call), no base IRI
(`base=None`: pyld's default would resolve an undefined `type` against `http://example.org/base/`
and sign it), JSON-LD 1.1. Strict where pyld is lenient: a term missing from the context raises
`UndefinedTermError` naming it (pyld drops it, so it would not be signed), and so does any
relative IRI (pyld leaves it out of the RDF). Canonical N-Quads come from `rdfc.py` (RDFC-1.0
escaping, with a work limit).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pyld.identifier_issuer import IdentifierIssuer
from pyld.jsonld import JsonLdError as PyldError
from pyld.jsonld import JsonLdProcessor

from open_registry.plugins.certificates.loader import (
    StaticDocumentLoader,
    UnknownContextError,
    default_loader,
    install_offline_loader,
)
from open_registry.plugins.certificates.rdfc import (
    CODE_POINT,
    DEFAULT_MAX_PERMUTATIONS,
    CanonicalizationError,
    WorkLimitError,
    canonicalize_dataset,
)

__all__ = [
    "CanonicalizationError",
    "InvalidDocumentError",
    "JsonLdProcessingError",
    "NestingError",
    "RelativeIriError",
    "UndefinedTermError",
    "UnknownContextError",
    "WorkLimitError",
    "canonicalize",
    "expand",
    "to_dataset",
]

install_offline_loader()

_FAST_TO_RDF = all(hasattr(JsonLdProcessor, name) for name in ("_create_node_map", "_graph_to_rdf"))


class JsonLdProcessingError(ValueError):
    """The document cannot be processed as JSON-LD (pyld's error, with its code)."""


class InvalidDocumentError(JsonLdProcessingError):
    """The document is JSON-LD that cannot be signed faithfully (a value would be lost)."""


class UndefinedTermError(InvalidDocumentError):
    """A property or type is not defined by the document's contexts (it would not be signed)."""

    def __init__(self, term: str, path: str | None) -> None:
        where = f" at {path}" if path else ""
        super().__init__(
            f"term {term!r}{where} is not defined in the @context, so it would be dropped "
            "(and not signed)"
        )
        self.term = term
        self.path = path


class RelativeIriError(InvalidDocumentError):
    """An identifier or type is a relative IRI (or not an IRI): it would not be signed."""

    def __init__(self, iri: str, path: str) -> None:
        super().__init__(
            f"{iri!r} at {path} is not an absolute IRI (an undefined term or a relative IRI), "
            "so it would be dropped (and not signed)"
        )
        self.iri = iri
        self.path = path


class _Dropped(Exception):
    def __init__(self, term: str | None) -> None:
        self.term = term


def _raise_dropped(term: str | None) -> None:
    raise _Dropped(term)


# -- IRIs -------------------------------------------------------------------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# characters IRIREF cannot hold unescaped, and any (Unicode) white space
_NOT_IN_IRI = re.compile(r'[\x00-\x20<>"{}|^`\\\x7f]|\s')


def is_absolute_iri(value: str) -> bool:
    """An absolute IRI that N-Quads can carry without escapes (no spaces, controls, `<>"{}|^\\`)."""
    return _SCHEME.match(value) is not None and _NOT_IN_IRI.search(value) is None


def _check_id(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise RelativeIriError(repr(value), path)
    if value.startswith("_:"):
        return
    if not is_absolute_iri(value):
        raise RelativeIriError(value, path)


def _check_expanded(element: Any, path: str) -> None:  # noqa: C901
    """Every IRI in expanded JSON-LD must be absolute (pyld silently drops relative ones)."""
    if isinstance(element, list):
        for i, item in enumerate(element):
            _check_expanded(item, f"{path}/{i}")
        return
    if not isinstance(element, dict):
        return
    if "@value" in element:
        datatype = element.get("@type")
        if datatype is not None and datatype != "@json":
            _check_id(datatype, f"{path}/@type")
        if "@direction" in element:
            raise InvalidDocumentError(f"@direction at {path} is not supported (not signed)")
        return
    for key, value in element.items():
        here = f"{path}/{_pointer_escape(key)}"
        if key == "@id":
            _check_id(value, here)
        elif key == "@type":
            for i, t in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(t, str) and not t.startswith("_:") and not is_absolute_iri(t):
                    raise UndefinedTermError(t, f"{here}/{i}")
        elif key in ("@list", "@set", "@graph", "@included", "@reverse"):
            if key == "@reverse" and isinstance(value, dict):
                for prop, items in value.items():
                    _check_property(prop, items, f"{here}/{_pointer_escape(prop)}")
            else:
                _check_expanded(value, here)
        elif key.startswith("@"):
            continue
        else:
            _check_property(key, value, here)


def _check_property(prop: str, value: Any, path: str) -> None:
    if prop.startswith("_:") or not is_absolute_iri(prop):
        raise UndefinedTermError(prop, path)
    _check_expanded(value, path)


def _pointer_escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _value_paths(element: Any, value: str, path: str = "") -> Iterator[str]:
    if isinstance(element, dict):
        for k, v in element.items():
            if k != "@context":
                yield from _value_paths(v, value, f"{path}/{_pointer_escape(k)}")
    elif isinstance(element, list):
        for i, v in enumerate(element):
            yield from _value_paths(v, value, f"{path}/{i}")
    elif element == value:
        yield path


def _key_paths(element: Any, key: str, path: str = "") -> Iterator[str]:
    if isinstance(element, dict):
        for k, v in element.items():
            here = f"{path}/{_pointer_escape(k)}"
            if k == key:
                yield here
            if k != "@context":
                yield from _key_paths(v, key, here)
    elif isinstance(element, list):
        for i, v in enumerate(element):
            yield from _key_paths(v, key, f"{path}/{i}")


# -- the API ----------------------------------------------------------------------------------


def _pyld_error(exc: PyldError) -> Exception:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, UnknownContextError):
            return UnknownContextError(cause.url)
        cause = cause.__cause__
    code = getattr(exc, "code", None) or getattr(exc, "type", "")
    return JsonLdProcessingError(f"JSON-LD processing failed ({code}): {exc.args[0]}")


class NestingError(JsonLdProcessingError):
    """The document nests too deeply for the (recursive) JSON-LD processing: refused, not a
    crash. Untrusted documents are bounded long before this (`limits.py`)."""

    def __init__(self) -> None:
        super().__init__("the document nests too deeply for JSON-LD processing")


def expand(document: dict[str, Any], loader: StaticDocumentLoader | None = None) -> list[Any]:
    """Expanded JSON-LD of `document`, offline and strict (see the module docstring)."""
    try:
        return _expand(document, loader)
    except RecursionError:
        raise NestingError() from None


def _expand(document: dict[str, Any], loader: StaticDocumentLoader | None) -> list[Any]:
    loader = loader or default_loader()
    try:
        expanded = JsonLdProcessor(on_property_dropped=_raise_dropped).expand(
            document, loader.options()
        )
    except _Dropped as dropped:
        term = dropped.term if dropped.term is not None else "(null)"
        path = next(_key_paths(document, term), None)
        raise UndefinedTermError(term, path) from None
    except PyldError as exc:
        raise _pyld_error(exc) from None
    try:
        _check_expanded(expanded, "")
    except UndefinedTermError as exc:  # point into the input, not the expanded form
        raise UndefinedTermError(exc.term, next(_value_paths(document, exc.term), None)) from None
    except RelativeIriError as exc:
        raise RelativeIriError(exc.iri, next(_value_paths(document, exc.iri), exc.path)) from None
    return expanded


def to_dataset(
    document: dict[str, Any], loader: StaticDocumentLoader | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The RDF dataset of `document` (pyld's shape), after the strict checks of `expand`."""
    loader = loader or default_loader()
    expanded = expand(document, loader)
    processor = JsonLdProcessor()
    try:
        return _to_rdf(processor, expanded, loader)
    except RecursionError:
        raise NestingError() from None


def _to_rdf(
    processor: JsonLdProcessor, expanded: list[Any], loader: StaticDocumentLoader
) -> dict[str, list[dict[str, Any]]]:
    try:
        if _FAST_TO_RDF:
            # pyld's own to_rdf steps on the already expanded form (its public to_rdf would
            # expand it a second time, a third of the cost)
            options = {**loader.options(), "produceGeneralizedRdf": False, "rdfDirection": None}
            issuer = IdentifierIssuer("_:b")
            node_map: dict[str, Any] = {"@default": {}}
            processor._create_node_map(expanded, node_map, "@default", issuer)
            return {
                name: processor._graph_to_rdf(graph, issuer, options)
                for name, graph in sorted(node_map.items())
                if name == "@default" or is_absolute_iri(name) or name.startswith("_:")
            }
        return processor.to_rdf(expanded, loader.options())
    except PyldError as exc:
        raise _pyld_error(exc) from None


def canonicalize(
    document: dict[str, Any],
    loader: StaticDocumentLoader | None = None,
    *,
    max_work_factor: int = 1,
    max_permutations: int = DEFAULT_MAX_PERMUTATIONS,
    order: str = CODE_POINT,
) -> str:
    """Canonical N-Quads (RDFC-1.0) of a JSON-LD document, offline and strict.

    `order="utf16"` sorts as rdf-canonize does (see `rdfc.py`)."""
    return canonicalize_dataset(
        to_dataset(document, loader),
        max_work_factor=max_work_factor,
        max_permutations=max_permutations,
        order=order,
    )
