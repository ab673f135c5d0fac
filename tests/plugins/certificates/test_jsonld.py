"""Offline, strict JSON-LD processing (`plugins/certificates/jsonld.py`, `loader.py`)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from pyld import jsonld as pyld

from open_registry.plugins.certificates import jsonld
from open_registry.plugins.certificates.jsonld import (
    RelativeIriError,
    UndefinedTermError,
    UnknownContextError,
    WorkLimitError,
    canonicalize,
)
from open_registry.plugins.certificates.loader import (
    CONTEXT_DIR,
    SHIPPED_CONTEXTS,
    StaticDocumentLoader,
    default_loader,
)
from tests.plugins.certificates.conftest import vaccination_credential

ISSUER = "did:key:z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2"


def test_every_shipped_context_loads_and_is_listed_in_the_readme() -> None:
    readme = (CONTEXT_DIR / "README.md").read_text(encoding="utf-8")
    for url, filename in SHIPPED_CONTEXTS.items():
        document = default_loader()(url)["document"]
        assert "@context" in document, url
        digest = hashlib.sha256((CONTEXT_DIR / filename).read_bytes()).hexdigest()[:16]
        assert f"`{filename}`" in readme and digest in readme, f"{filename}: README out of date"


def test_unknown_context_url_raises() -> None:
    doc = {"@context": "https://example.com/contexts/unknown/v1", "@id": "urn:x"}
    with pytest.raises(UnknownContextError) as err:
        canonicalize(doc)
    assert err.value.url == "https://example.com/contexts/unknown/v1"
    # a context the shipped list does not have, even a well-known one, is refused too
    with pytest.raises(UnknownContextError):
        canonicalize({"@context": "https://www.w3.org/ns/credentials/examples/v2", "@id": "urn:x"})


def test_global_pyld_loader_is_the_offline_one() -> None:
    assert pyld.get_document_loader() is default_loader()
    # pyld called directly, without our options, still cannot fetch
    with pytest.raises(pyld.JsonLdError) as err:
        pyld.expand({"@context": "https://example.com/ctx", "@id": "urn:x"})
    cause: BaseException | None = err.value
    while cause is not None and not isinstance(cause, UnknownContextError):
        cause = cause.__cause__
    assert isinstance(cause, UnknownContextError)


def test_a_loader_does_not_answer_through_another(vector_loader: StaticDocumentLoader) -> None:
    """pyld's global resolved-context cache would let a context loaded through one loader answer
    later calls through any loader; each loader here has its own cache."""
    doc = {
        "@context": [
            "https://www.w3.org/ns/credentials/v2",
            "https://www.w3.org/ns/credentials/examples/v2",
        ],
        "id": "urn:uuid:1",
        "type": ["VerifiableCredential"],
        "issuer": ISSUER,
        "credentialSubject": {"id": "did:example:1", "alumniOf": "x"},
    }
    assert "alumniOf" in canonicalize(doc, vector_loader)
    with pytest.raises(UnknownContextError):
        canonicalize(doc)


@pytest.mark.parametrize(
    ("where", "term", "path"),
    [
        ("credential", "favouriteColour", "/favouriteColour"),
        ("subject", "favouriteColour", "/credentialSubject/favouriteColour"),
        ("evidence", "favouriteColour", "/evidence/0/favouriteColour"),
        ("address", "favouriteColour", "/credentialSubject/address/favouriteColour"),
    ],
)
def test_undefined_term_raises_naming_it(where: str, term: str, path: str) -> None:
    doc = vaccination_credential(ISSUER)
    target: dict[str, Any] = {
        "credential": doc,
        "subject": doc["credentialSubject"],
        "evidence": doc["evidence"][0],
        "address": doc["credentialSubject"]["address"],
    }[where]
    target[term] = "blue"
    with pytest.raises(UndefinedTermError) as err:
        canonicalize(doc)
    assert err.value.term == term
    assert err.value.path == path
    assert term in str(err.value)


def test_type_scoped_term_outside_its_type_raises() -> None:
    # `batch` is defined for Vaccination evidence only: on the subject it would be dropped
    doc = vaccination_credential(ISSUER)
    doc["credentialSubject"]["batch"] = "B1"
    with pytest.raises(UndefinedTermError, match="'batch'"):
        canonicalize(doc)


def test_undefined_type_raises() -> None:
    doc = vaccination_credential(
        ISSUER, type=["VerifiableCredential", "ProofOfVaccinationCredential", "VaccinationCard"]
    )
    with pytest.raises(UndefinedTermError) as err:
        canonicalize(doc)
    assert err.value.term == "VaccinationCard"
    assert err.value.path == "/type/2"


@pytest.mark.parametrize(
    "value", ["recipients/42", "did example", "urn:ex:a b", "urn:ex:<x>", "", "urn:ex:\x01"]
)
def test_relative_or_invalid_iri_raises(value: str) -> None:
    doc = vaccination_credential(ISSUER)
    doc["credentialSubject"]["id"] = value
    with pytest.raises(RelativeIriError) as err:
        canonicalize(doc)
    assert err.value.path == "/credentialSubject/id"


def test_no_base_iri_is_applied() -> None:
    """pyld's default base (http://example.org/base/) never appears: relative values raise."""
    doc = vaccination_credential(ISSUER)
    doc["id"] = "certificates/1"
    with pytest.raises(RelativeIriError):
        canonicalize(doc)
    assert "example.org/base" not in canonicalize(vaccination_credential(ISSUER))


def test_control_characters_get_rdfc10_escaping() -> None:
    doc = vaccination_credential(ISSUER)
    doc["credentialSubject"]["name"] = 'a\bb\fc\x01d\x7fe\tf\ng"h\\i\x80j'
    out = canonicalize(doc)
    assert '"a\\bb\\fc\\u0001d\\u007Fe\\tf\\ng\\"h\\\\i\x80j"' in out
    # one quad per line: no raw control character survives (besides the line ends)
    assert re.search(r"[\x00-\x09\x0b-\x1f\x7f]", out) is None


def test_fast_and_public_to_rdf_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = vaccination_credential(ISSUER)
    fast = canonicalize(doc)
    monkeypatch.setattr(jsonld, "_FAST_TO_RDF", False)
    assert canonicalize(doc) == fast


def test_blank_node_bomb_stops_at_the_work_limit() -> None:
    """A JSON-LD document whose nodes form a 12-clique of indistinguishable blank nodes."""
    n = 12
    doc = {
        "@context": {"@vocab": "https://example.org/vocab#"},
        "@graph": [
            {"@id": f"_:n{i}", "knows": [{"@id": f"_:n{j}"} for j in range(n) if j != i]}
            for i in range(n)
        ],
    }
    with pytest.raises(WorkLimitError, match="work limit"):
        canonicalize(doc)
