"""UI text catalogs (one JSON file per locale in `registry/locales/`) and language negotiation.

The language of a page is, in order: `?lang=`, the `registry_lang` cookie set by the language
switcher, the best match of `Accept-Language`, then English. A message missing from a catalog
falls back to English, then to its key, so a partial translation never breaks a page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

DEFAULT_LOCALE = "en"
COOKIE = "registry_lang"


class Catalogs:
    """Every shipped catalog, loaded once per app."""

    def __init__(self, messages: Mapping[str, Mapping[str, str]]):
        self.messages = messages
        self.locales = tuple(sorted(messages, key=lambda k: (k != DEFAULT_LOCALE, k)))

    @classmethod
    def load(cls) -> Catalogs:
        folder = resources.files("open_registry.core") / "locales"
        messages = {}
        for entry in folder.iterdir():
            if entry.name.endswith(".json"):
                messages[entry.name[:-5]] = json.loads(entry.read_text(encoding="utf-8"))
        return cls(messages)

    def name_of(self, locale: str) -> str:
        """The language's own name (`Français`), for the switcher."""
        return self.messages.get(locale, {}).get("language.name", locale)

    def translator(self, locale: str) -> Translator:
        return Translator(locale, self.messages.get(locale, {}), self.messages[DEFAULT_LOCALE])

    def negotiate(self, query: str | None, cookie: str | None, accept_language: str | None) -> str:
        """The locale to use for one request."""
        for candidate in (query, cookie):
            if candidate and self.match(candidate):
                return self.match(candidate) or DEFAULT_LOCALE
        for tag in parse_accept_language(accept_language or ""):
            found = self.match(tag)
            if found:
                return found
        return DEFAULT_LOCALE

    def match(self, tag: str) -> str | None:
        tag = tag.strip().lower()
        if tag in self.messages:
            return tag
        base = tag.split("-")[0]
        return base if base in self.messages else None


class Translator:
    """`t("list.next")`, `t("list.count", n=3)` for one locale."""

    def __init__(self, locale: str, messages: Mapping[str, str], fallback: Mapping[str, str]):
        self.locale = locale
        self.messages = messages
        self.fallback = fallback

    def __call__(self, key: str, **params: Any) -> str:
        text = self.messages.get(key) or self.fallback.get(key) or key
        return text.format(**params) if params else text


def parse_accept_language(header: str) -> list[str]:
    """Language tags of an `Accept-Language` header, best first (`q=0` left out)."""
    scored = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        if tag and tag != "*" and q > 0:
            scored.append((-q, i, tag))
    return [tag for _, _, tag in sorted(scored)]
