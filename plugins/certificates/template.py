"""Credential templates: a JSON document whose strings may hold `{{ path }}` placeholders.

A string that is exactly one placeholder takes the value's own JSON type (a dose stays a number);
a value that is missing, null or empty removes its key (and an object left empty), so a
credential never carries nulls or empty strings. Placeholders inside a longer string are filled
in as text. Paths are dotted names into the issuance context (`recipient.name`,
`facility.address.district`); a filter may follow a bar: `date` (the first ten characters of a
date-time), `upper`, `lower`, `str`, `int`.

Templates are compiled once into plain functions, so filling one in costs a few microseconds and
no text is ever parsed as JSON at issuance time (no way to inject structure through a value).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*(?:\|\s*([a-z]+)\s*)?\}\}")
_MISSING = object()

Filler = Callable[[Mapping[str, Any]], Any]


class TemplateError(ValueError):
    """A template that cannot be used; the message names the file and the place."""


def _filter(name: str | None, where: str) -> Callable[[Any], Any]:
    filters: dict[str, Callable[[Any], Any]] = {
        "date": lambda v: str(v)[:10],
        "upper": lambda v: str(v).upper(),
        "lower": lambda v: str(v).lower(),
        "str": str,
        "int": int,
    }
    if name is None:
        return lambda v: v
    if name not in filters:
        raise TemplateError(f"{where}: unknown filter {name!r} (one of {', '.join(filters)})")
    return filters[name]


def _getter(path: str) -> Callable[[Mapping[str, Any]], Any]:
    parts = path.split(".")

    def get(context: Mapping[str, Any]) -> Any:
        value: Any = context
        for part in parts:
            try:
                value = value[part]
            except (KeyError, TypeError, IndexError):  # missing, or not an object
                return _MISSING
            if value is None:
                return _MISSING
        return value

    return get


def _empty(value: Any) -> bool:
    return value is _MISSING or value is None or value == "" or value == {} or value == []


def _compile(node: Any, where: str, paths: set[str]) -> Filler:  # noqa: C901
    if isinstance(node, dict):
        items = [(k, _compile(v, f"{where}/{k}", paths)) for k, v in node.items()]

        def fill_object(context: Mapping[str, Any]) -> Any:
            out = {}
            for key, fill in items:
                value = fill(context)
                if not _empty(value):
                    out[key] = value
            return out or _MISSING

        return fill_object
    if isinstance(node, list):
        fills = [_compile(v, f"{where}/{i}", paths) for i, v in enumerate(node)]

        def fill_list(context: Mapping[str, Any]) -> Any:
            values = [f(context) for f in fills]
            return [v for v in values if not _empty(v)] or _MISSING

        return fill_list
    if isinstance(node, str):
        paths.update(m.group(1) for m in _PLACEHOLDER.finditer(node))
        whole = _PLACEHOLDER.fullmatch(node.strip())
        if whole:
            get, apply = _getter(whole.group(1)), _filter(whole.group(2), where)

            def fill_value(context: Mapping[str, Any]) -> Any:
                value = get(context)
                if value is _MISSING:
                    return _MISSING
                try:
                    return apply(value)
                except (TypeError, ValueError):
                    return _MISSING

            return fill_value
        pieces = _PLACEHOLDER.split(node)
        if len(pieces) == 1:
            return lambda _context: node
        # split gives text, path, filter, text, path, filter, ..., text
        parts: list[Callable[[Mapping[str, Any]], str]] = []
        for i in range(0, len(pieces), 3):
            text = pieces[i]

            def literal(_context: Mapping[str, Any], t: str = text) -> str:
                return t

            parts.append(literal)
            if i + 1 < len(pieces):
                get, apply = _getter(pieces[i + 1]), _filter(pieces[i + 2], where)

                def piece(context: Mapping[str, Any], get=get, apply=apply) -> str:
                    value = get(context)
                    return "" if value is _MISSING else str(apply(value))

                parts.append(piece)
        return lambda context: "".join(p(context) for p in parts)
    return lambda _context: node


class CredentialTemplate:
    """A compiled template; `fill(context)` gives the unsigned credential."""

    def __init__(self, document: dict[str, Any], source: str = "<template>"):
        if not isinstance(document, dict) or "@context" not in document:
            raise TemplateError(f"{source}: a credential template is a JSON object with @context")
        self.source = source
        self.document = document
        #: every dotted path the template reads (`recipient.name`, ...)
        self.paths: set[str] = set()
        self._fill = _compile(document, source, self.paths)

    @classmethod
    def from_file(cls, path: Path) -> CredentialTemplate:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TemplateError(f"{path}: not a readable JSON file: {exc}") from None
        return cls(document, str(path))

    def fill(self, context: Mapping[str, Any]) -> dict[str, Any]:
        result = self._fill(context)
        return {} if result is _MISSING else result


DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "credential.json"


def load_templates(folder: Path | None) -> tuple[CredentialTemplate, dict[str, CredentialTemplate]]:
    """The default template and the per-programme ones (`<programme code>.json` in `folder`)."""
    default = CredentialTemplate.from_file(DEFAULT_TEMPLATE)
    by_program: dict[str, CredentialTemplate] = {}
    if folder is not None:
        if not Path(folder).is_dir():
            raise TemplateError(f"templates folder {folder} does not exist")
        for path in sorted(Path(folder).glob("*.json")):
            by_program[path.stem] = CredentialTemplate.from_file(path)
    return default, by_program
