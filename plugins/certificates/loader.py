"""The offline JSON-LD document loader: every context is a file shipped in `contexts/`.

pyld's default loader fetches contexts over HTTP whenever `requests` is importable. This loader
answers only the URLs it knows and raises `UnknownContextError` for any other, so nothing is ever
fetched at run time. Each loader keeps its own resolved-context cache (pyld's global cache would
let a context loaded through one loader answer through another that does not know it).
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pyld import jsonld
from pyld.context_resolver import ContextResolver

CONTEXT_DIR = Path(__file__).parent / "contexts"

VACCINATION_CONTEXT_URL = "https://open-registry.example/contexts/vaccination/v1"
CREDENTIALS_V1_URL = "https://www.w3.org/2018/credentials/v1"
CREDENTIALS_V2_URL = "https://www.w3.org/ns/credentials/v2"
DATA_INTEGRITY_V2_URL = "https://w3id.org/security/data-integrity/v2"
SECURITY_V1_URL = "https://w3id.org/security/v1"
SECURITY_V2_URL = "https://w3id.org/security/v2"
ED25519_2020_URL = "https://w3id.org/security/suites/ed25519-2020/v1"
ED25519_2018_URL = "https://w3id.org/security/suites/ed25519-2018/v1"
MULTIKEY_V1_URL = "https://w3id.org/security/multikey/v1"
DID_V1_URL = "https://www.w3.org/ns/did/v1"

# URL -> file in contexts/ (see contexts/README.md for where each file comes from)
SHIPPED_CONTEXTS: dict[str, str] = {
    CREDENTIALS_V1_URL: "credentials-v1.jsonld",
    CREDENTIALS_V2_URL: "credentials-v2.jsonld",
    DATA_INTEGRITY_V2_URL: "data-integrity-v2.jsonld",
    SECURITY_V1_URL: "security-v1.jsonld",
    SECURITY_V2_URL: "security-v2.jsonld",
    ED25519_2020_URL: "ed25519-signature-2020-v1.jsonld",
    ED25519_2018_URL: "ed25519-signature-2018-v1.jsonld",
    MULTIKEY_V1_URL: "multikey-v1.jsonld",
    DID_V1_URL: "did-v1.jsonld",
    "https://divoc.dev/credentials/vaccination/v1": "divoc-vaccination-v1.jsonld",
    "https://cowin.gov.in/credentials/vaccination/v1": "divoc-vaccination-v1.jsonld",
    VACCINATION_CONTEXT_URL: "vaccination-v1.jsonld",
}

_CACHE_SIZE = 100


class UnknownContextError(ValueError):
    """A context URL that no shipped (or configured) file answers: it is never fetched."""

    def __init__(self, url: str) -> None:
        super().__init__(f"unknown JSON-LD context {url!r}: only shipped contexts are loaded")
        self.url = url


@cache
def _read_shipped(filename: str) -> dict[str, Any]:
    return json.loads((CONTEXT_DIR / filename).read_text(encoding="utf-8"))


class _LruCache(OrderedDict):
    """The mapping pyld's ContextResolver shares between calls, bounded (least recent out) and
    safe to share between threads."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            if key in self:
                self.move_to_end(key)
                return super().__getitem__(key)
            return default

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            while len(self) > self.maxsize:
                self.popitem(last=False)


class StaticDocumentLoader:
    """A pyld document loader answering a fixed set of URLs from memory; others raise."""

    def __init__(self, documents: Mapping[str, Mapping[str, Any]]) -> None:
        self._documents = {url: dict(doc) for url, doc in documents.items()}
        # resolved contexts, shared by the calls that use this loader (pyld's LRU shape)
        self.cache = _LruCache(_CACHE_SIZE)

    def with_documents(self, documents: Mapping[str, Mapping[str, Any]]) -> StaticDocumentLoader:
        """A new loader that also answers `documents` (tests add the W3C example contexts)."""
        return StaticDocumentLoader({**self._documents, **documents})

    def document(self, url: str) -> dict[str, Any]:
        try:
            return copy.deepcopy(self._documents[url])
        except KeyError:
            raise UnknownContextError(url) from None

    def __call__(self, url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "contentType": "application/ld+json",
            "contextUrl": None,
            "documentUrl": url,
            "document": self.document(url),
            # 'static' lets pyld keep the resolved context in this loader's cache
            "tag": "static",
        }

    def options(self) -> dict[str, Any]:
        """pyld options for one call: this loader, its cache, no base IRI, JSON-LD 1.1."""
        return {
            "documentLoader": self,
            "contextResolver": ContextResolver(self.cache, self),
            "base": None,
            "processingMode": "json-ld-1.1",
        }


@cache
def default_loader() -> StaticDocumentLoader:
    """The loader for the contexts shipped with the package (one per process)."""
    return StaticDocumentLoader(
        {url: _read_shipped(name) for url, name in SHIPPED_CONTEXTS.items()}
    )


def install_offline_loader() -> None:
    """Make the shipped-contexts loader pyld's global default, so no pyld call can fetch."""
    jsonld.set_document_loader(default_loader())
