"""A fast path to the canonical N-Quads of our fixed vaccination credential shape (and of the proof
options signed with it), byte-identical to `jsonld.canonicalize`, falling back to it otherwise.

JSON-LD expansion with pyld is most of the cost of signing (~10 ms a credential). For documents
of the shape below, under the shipped contexts, the RDF quads are known in advance: this module
writes them straight from the JSON (a table of term -> IRI and datatype, taken from
`credentials-v2.jsonld` and `vaccination-v1.jsonld`), then runs the same RDFC-1.0 as the full
path (`rdfc.canonicalize_quads`). Anything outside the shape — another context or loader, an
unknown key, a value of another JSON type, a relative IRI, a null, a float, an array where one
value is expected — goes through full canonicalization (which also raises the strict errors).
A property test checks byte equality with the full path over random content.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from open_registry.plugins.certificates.jsonld import canonicalize as full_canonicalize
from open_registry.plugins.certificates.jsonld import is_absolute_iri
from open_registry.plugins.certificates.loader import (
    CREDENTIALS_V2_URL,
    ED25519_2020_URL,
    VACCINATION_CONTEXT_URL,
    StaticDocumentLoader,
    default_loader,
)
from open_registry.plugins.certificates.rdfc import (
    Quad,
    Term,
    canonicalize_quads,
    escape_iri,
    escape_literal,
)

XSD = "http://www.w3.org/2001/XMLSchema#"
RDF_TYPE = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
CRED = "https://www.w3.org/2018/credentials#"
SCHEMA = "https://schema.org/"
VAC = "https://open-registry.example/vaccination#"
STATUS = "https://www.w3.org/ns/credentials/status#"
SEC = "https://w3id.org/security#"

_CONTEXTS = (
    (CREDENTIALS_V2_URL, VACCINATION_CONTEXT_URL),
    (CREDENTIALS_V2_URL, VACCINATION_CONTEXT_URL, ED25519_2020_URL),
)


class _Uncovered(Exception):
    """The document is not of the shape: use full canonicalization."""


@dataclass(frozen=True)
class _Field:
    iri: str
    predicate: str = field(init=False)  # the IRI as N-Quads writes it

    def __post_init__(self) -> None:
        object.__setattr__(self, "predicate", f"<{escape_iri(self.iri)}>")


@dataclass(frozen=True)
class _Literal(_Field):
    datatype: str | None = None  # coerced datatype; None: native JSON types (string/int/bool)
    suffix: str = field(init=False)  # what follows a string value's quotes in N-Quads

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "suffix", f"^^<{self.datatype}>" if self.datatype else "")


@dataclass(frozen=True)
class _Iri(_Field):
    pass


@dataclass(frozen=True)
class _Node(_Field):
    shape: _Shape | None = None
    many: bool = False  # an array of nodes is allowed


@dataclass(frozen=True)
class _Shape:
    types: dict[str, str]  # allowed `type` values -> IRIs
    type_required: frozenset[str]  # these types must all be present
    fields: Mapping[str, _Literal | _Iri | _Node] = field(default_factory=dict)
    has_id: bool = True  # `id` allowed (an absolute IRI); without it: a blank node


def _lits(prefix: str, names: dict[str, str], datatype: str | None = None) -> dict[str, _Literal]:
    return {key: _Literal(prefix + local, datatype) for key, local in names.items()}


_ADDRESS = _Shape(
    types={"PostalAddress": SCHEMA + "PostalAddress"},
    type_required=frozenset(),
    has_id=False,
    fields={
        **_lits(SCHEMA, {"streetAddress": "streetAddress", "city": "addressLocality"}),
        **_lits(SCHEMA, {"addressRegion": "addressRegion", "addressCountry": "addressCountry"}),
        **_lits(SCHEMA, {"postalCode": "postalCode"}),
        **_lits(VAC, {"streetAddress2": "streetAddress2", "district": "district"}),
    },
)
_PERSON = _Shape(
    types={"Person": SCHEMA + "Person"},
    type_required=frozenset({"Person"}),
    fields={
        **_lits(VAC, {"refId": "refId", "age": "age"}),
        **_lits(SCHEMA, {"name": "name", "gender": "gender", "nationality": "nationality"}),
        "birthDate": _Literal(SCHEMA + "birthDate", XSD + "date"),
        "address": _Node(SCHEMA + "address", _ADDRESS),
    },
)
_VERIFIER = _Shape(types={}, type_required=frozenset(), fields=_lits(SCHEMA, {"name": "name"}))
_FACILITY = _Shape(
    types={},
    type_required=frozenset(),
    fields={"name": _Literal(SCHEMA + "name"), "address": _Node(SCHEMA + "address", _ADDRESS)},
)
_VACCINATION = _Shape(
    types={"Vaccination": VAC + "Vaccination"},
    type_required=frozenset({"Vaccination"}),
    fields={
        **_lits(VAC, {k: k for k in ("certificateId", "infoUrl", "feedbackUrl", "batch")}),
        **_lits(VAC, {k: k for k in ("vaccine", "manufacturer", "dose", "totalDoses")}),
        "date": _Literal(VAC + "date", XSD + "dateTime"),
        "effectiveStart": _Literal(VAC + "effectiveStart", XSD + "date"),
        "effectiveUntil": _Literal(VAC + "effectiveUntil", XSD + "date"),
        "verifier": _Node(VAC + "verifier", _VERIFIER),
        "facility": _Node(VAC + "facility", _FACILITY),
    },
)
_STATUS_ENTRY = _Shape(
    types={"BitstringStatusListEntry": STATUS + "BitstringStatusListEntry"},
    type_required=frozenset({"BitstringStatusListEntry"}),
    fields={
        **_lits(STATUS, {"statusPurpose": "statusPurpose", "statusListIndex": "statusListIndex"}),
        "statusListCredential": _Iri(STATUS + "statusListCredential"),
    },
)
_CREDENTIAL = _Shape(
    types={
        "VerifiableCredential": CRED + "VerifiableCredential",
        "ProofOfVaccinationCredential": VAC + "ProofOfVaccinationCredential",
    },
    type_required=frozenset({"VerifiableCredential", "ProofOfVaccinationCredential"}),
    fields={
        "issuer": _Iri(CRED + "issuer"),
        "validFrom": _Literal(CRED + "validFrom", XSD + "dateTime"),
        "validUntil": _Literal(CRED + "validUntil", XSD + "dateTime"),
        "name": _Literal(SCHEMA + "name"),
        "description": _Literal(SCHEMA + "description"),
        "nonTransferable": _Literal(VAC + "nonTransferable"),
        "credentialSubject": _Node(CRED + "credentialSubject", _PERSON),
        "evidence": _Node(CRED + "evidence", _VACCINATION, many=True),
        "credentialStatus": _Node(CRED + "credentialStatus", _STATUS_ENTRY, many=True),
    },
)


def _literal(value: Any, spec: _Literal) -> Term:
    if type(value) is str:  # the common case first
        return ("t", f'"{escape_literal(value)}"{spec.suffix}')
    if spec.datatype is not None:
        raise _Uncovered  # a coerced field holding a number or boolean: leave it to pyld
    if isinstance(value, bool):
        return ("t", f'"{"true" if value else "false"}"^^<{XSD}boolean>')
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**21:
        return ("t", f'"{value}"^^<{XSD}integer>')
    raise _Uncovered  # floats (canonical doubles), huge integers, objects, arrays, null


def _iri(value: Any) -> Term:
    if not isinstance(value, str) or not is_absolute_iri(value):
        raise _Uncovered
    return ("t", f"<{escape_iri(value)}>")


class _Writer:
    def __init__(self) -> None:
        self.quads: list[Quad] = []
        self.labels: Iterator[int] = itertools.count()

    def node(self, obj: Any, shape: _Shape) -> Term:
        if not isinstance(obj, dict):
            raise _Uncovered
        if "id" in obj:
            if not shape.has_id:
                raise _Uncovered
            subject = _iri(obj["id"])
        else:
            subject = ("b", f"_:s{next(self.labels)}")
        types = obj.get("type", [])
        types = [types] if isinstance(types, str) else types
        if not isinstance(types, list) or not all(
            isinstance(t, str) and t in shape.types for t in types
        ):
            raise _Uncovered
        if not shape.type_required <= set(types):
            raise _Uncovered
        quads = self.quads
        for t in dict.fromkeys(types):
            quads.append((subject, RDF_TYPE, ("t", f"<{shape.types[t]}>"), None))
        for key, value in obj.items():
            if key in ("id", "type"):
                continue
            spec = shape.fields.get(key)
            if spec is None:
                raise _Uncovered
            predicate = spec.predicate
            if isinstance(spec, _Literal):
                quads.append((subject, predicate, _literal(value, spec), None))
            elif isinstance(spec, _Iri):
                quads.append((subject, predicate, _iri(value), None))
            else:
                assert isinstance(spec, _Node) and spec.shape is not None
                items = value if spec.many and isinstance(value, list) and value else [value]
                for item in items:
                    quads.append((subject, predicate, self.node(item, spec.shape), None))
        return subject


def credential_quads(document: dict[str, Any]) -> list[Quad] | None:
    """The RDF quads of a vaccination credential of the fixed shape, or None if not covered."""
    context = document.get("@context")
    if not isinstance(context, list) or tuple(context) not in _CONTEXTS:
        return None
    writer = _Writer()
    try:
        writer.node({k: v for k, v in document.items() if k != "@context"}, _CREDENTIAL)
    except _Uncovered:
        return None
    return _dedupe(writer.quads)


_PURPOSES = {
    p: f"<{SEC}{iri}>"
    for p, iri in {
        "assertionMethod": "assertionMethod",
        "authentication": "authenticationMethod",
        "capabilityInvocation": "capabilityInvocationMethod",
        "capabilityDelegation": "capabilityDelegationMethod",
        "keyAgreement": "keyAgreementMethod",
    }.items()
}


def proof_options_quads(document: dict[str, Any]) -> list[Quad] | None:
    """The quads of Data Integrity / Ed25519Signature2020 proof options (with our credential's
    @context), or None if not covered."""
    context = document.get("@context")
    if not isinstance(context, list) or tuple(context) not in _CONTEXTS:
        return None
    kind = document.get("type")
    if kind == "DataIntegrityProof" and document.get("cryptosuite") == "eddsa-rdfc-2022":
        keys = {"@context", "type", "cryptosuite", "created", "verificationMethod", "proofPurpose"}
    elif kind == "Ed25519Signature2020" and ED25519_2020_URL in context:
        keys = {"@context", "type", "created", "verificationMethod", "proofPurpose"}
    else:
        return None
    purpose = document.get("proofPurpose")
    purpose = _PURPOSES.get(purpose) if isinstance(purpose, str) else None
    created = document.get("created")
    if set(document) != keys or purpose is None or not isinstance(created, str):
        return None
    try:
        method = _iri(document.get("verificationMethod"))
    except _Uncovered:
        return None
    node: Term = ("b", "_:p")
    quads: list[Quad] = [
        (node, RDF_TYPE, ("t", f"<{SEC}{kind}>"), None),
        (node, "<http://purl.org/dc/terms/created>", _literal(created, _CREATED), None),
        (node, f"<{SEC}verificationMethod>", method, None),
        (node, f"<{SEC}proofPurpose>", ("t", purpose), None),
    ]
    if kind == "DataIntegrityProof":
        suite = ("t", f'"eddsa-rdfc-2022"^^<{SEC}cryptosuiteString>')
        quads.append((node, f"<{SEC}cryptosuite>", suite, None))
    return quads


_CREATED = _Literal("http://purl.org/dc/terms/created", XSD + "dateTime")


def _dedupe(quads: list[Quad]) -> list[Quad]:
    return list(dict.fromkeys(quads))


@lru_cache(maxsize=256)
def _proof_template(kind: str, method: str, purpose: str) -> tuple[str, str]:
    """The canonical proof options around their `created` literal (the quads' order does not
    depend on `created`: they share one subject and differ in their predicates)."""
    document = {
        "@context": list(_CONTEXTS[1]),
        "type": kind,
        "created": _PLACEHOLDER,
        "verificationMethod": method,
        "proofPurpose": purpose,
    }
    if kind == "DataIntegrityProof":
        document["cryptosuite"] = "eddsa-rdfc-2022"
    quads = proof_options_quads(document)
    assert quads is not None
    before, placeholder, after = canonicalize_quads(quads).partition(f'"{_PLACEHOLDER}"')
    assert placeholder
    return before, after


_PLACEHOLDER = "created-placeholder"


def _canonical_proof_options(document: dict[str, Any]) -> str | None:
    if proof_options_quads(document) is None:
        return None
    before, after = _proof_template(
        document["type"], document["verificationMethod"], document["proofPurpose"]
    )
    return f'{before}"{escape_literal(document["created"])}"{after}'


def covers(document: dict[str, Any]) -> bool:
    """Whether `canonicalize` takes the fast path for `document` (no fallback)."""
    return proof_options_quads(document) is not None or credential_quads(document) is not None


def canonicalize(document: dict[str, Any], loader: StaticDocumentLoader | None = None) -> str:
    """Canonical N-Quads of `document`: the fast path for our shapes under the shipped contexts,
    otherwise (or with another loader) `jsonld.canonicalize`; the same bytes either way."""
    if loader is None or loader is default_loader():
        proof = _canonical_proof_options(document)
        if proof is not None:
            return proof
        quads = credential_quads(document)
        if quads is not None:
            return canonicalize_quads(quads)
    return full_canonicalize(document, loader)
