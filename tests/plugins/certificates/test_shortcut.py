"""The fast path (`shortcut.py`) gives the same bytes as full canonicalization, for random
credentials of our shape, and falls back to it for anything else."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from open_registry.plugins.certificates import jsonld, keys, shortcut, suites
from open_registry.plugins.certificates.loader import (
    CREDENTIALS_V2_URL,
    ED25519_2020_URL,
    VACCINATION_CONTEXT_URL,
    default_loader,
)
from tests.plugins.certificates.conftest import vaccination_credential

ISSUER = "did:key:z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2"
METHOD = f"{ISSUER}#{ISSUER.removeprefix('did:key:')}"

# any Unicode but surrogates, with control characters, quotes and backslashes made likely
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs",)),
        st.sampled_from([*map(chr, [*range(0x20), 0x7F, 0x85, 0x2028, 0xFEFF]), '"', "\\"]),
    ),
    max_size=16,
)
IRI = st.builds(
    lambda scheme, tail: f"{scheme}:{tail}",
    st.sampled_from(["urn:uuid", "did:example", "https", "did:key"]),
    st.text(alphabet="abcdefXYZ0123456789-._~:/?#[]@!$&'()*+,;=%é∞", min_size=1, max_size=20),
)
NUMBER = st.integers(min_value=-(10**21) + 1, max_value=10**21 - 1)
SCALAR = st.one_of(TEXT, NUMBER, st.booleans())


def _optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects holding any subset of `fields`."""
    return st.fixed_dictionaries({}, optional=fields)


ADDRESS = _optional(
    {
        "type": st.sampled_from(["PostalAddress", ["PostalAddress"]]),
        **{
            k: TEXT
            for k in ("streetAddress", "streetAddress2", "district", "city", "addressRegion")
        },
        "addressCountry": TEXT,
        "postalCode": TEXT,
    }
)
PERSON = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries({"type": st.sampled_from(["Person", ["Person"]])}),
    _optional(
        {
            "id": IRI,
            "refId": SCALAR,
            "name": TEXT,
            "gender": TEXT,
            "age": SCALAR,
            "birthDate": TEXT,
            "nationality": TEXT,
            "address": ADDRESS,
        }
    ),
)
VACCINATION = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries({"type": st.sampled_from(["Vaccination", ["Vaccination"]])}),
    _optional(
        {
            "id": IRI,
            **{k: SCALAR for k in ("certificateId", "infoUrl", "feedbackUrl", "batch")},
            **{k: SCALAR for k in ("vaccine", "manufacturer", "dose", "totalDoses")},
            "date": TEXT,
            "effectiveStart": TEXT,
            "effectiveUntil": TEXT,
            "verifier": _optional({"id": IRI, "name": TEXT}),
            "facility": _optional({"id": IRI, "name": TEXT, "address": ADDRESS}),
        }
    ),
)
STATUS = st.fixed_dictionaries(
    {
        "type": st.just("BitstringStatusListEntry"),
        "statusPurpose": st.sampled_from(["revocation", "suspension"]),
        "statusListIndex": st.integers(0, 10**6).map(str),
        "statusListCredential": IRI,
    },
    optional={"id": IRI},
)
CREDENTIAL = st.builds(
    lambda context, base, extra: {"@context": context, **base, **extra},
    st.sampled_from(
        [
            [CREDENTIALS_V2_URL, VACCINATION_CONTEXT_URL],
            [CREDENTIALS_V2_URL, VACCINATION_CONTEXT_URL, ED25519_2020_URL],
        ]
    ),
    st.fixed_dictionaries(
        {
            "type": st.permutations(["VerifiableCredential", "ProofOfVaccinationCredential"]),
            "issuer": IRI,
            "credentialSubject": PERSON,
        }
    ),
    _optional(
        {
            "id": IRI,
            "validFrom": TEXT,
            "validUntil": TEXT,
            "name": TEXT,
            "description": TEXT,
            "nonTransferable": SCALAR,
            "evidence": st.one_of(VACCINATION, st.lists(VACCINATION, min_size=1, max_size=3)),
            "credentialStatus": st.one_of(STATUS, st.lists(STATUS, min_size=1, max_size=2)),
        }
    ),
)


def _same_result(document: dict[str, Any]) -> None:
    """The shortcut and the full path give the same bytes, or fail the same way."""
    try:
        expected: Any = jsonld.canonicalize(document)
    except ValueError as exc:
        expected = type(exc)
    try:
        got: Any = shortcut.canonicalize(document)
    except ValueError as exc:
        got = type(exc)
    assert got == expected


@settings(max_examples=250, deadline=None, database=None)
@given(CREDENTIAL)
def test_shortcut_is_byte_identical_for_our_shape(document: dict[str, Any]) -> None:
    assert shortcut.covers(document)
    _same_result(document)


@settings(max_examples=100, deadline=None, database=None)
@given(
    suite=st.sampled_from(suites.SUITES),
    created=TEXT,
    method=IRI,
    purpose=st.sampled_from(["assertionMethod", "authentication", "capabilityInvocation"]),
    short_context=st.booleans(),
)
def test_shortcut_is_byte_identical_for_proof_options(
    suite: str, created: str, method: str, purpose: str, short_context: bool
) -> None:
    context = [CREDENTIALS_V2_URL, VACCINATION_CONTEXT_URL]
    if suite == suites.ED25519_SIGNATURE_2020 or not short_context:
        context.append(ED25519_2020_URL)
    options = {**suites.proof_options(suite, method, created, purpose), "@context": context}
    assert shortcut.covers(options)
    _same_result(options)


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(document=CREDENTIAL, suite=st.sampled_from(suites.SUITES))
def test_signing_with_the_shortcut_gives_the_same_credential(
    document: dict[str, Any], suite: str, issuer_key: Ed25519PrivateKey
) -> None:
    method = keys.did_key_method(issuer_key.public_key())
    document = {**document, "issuer": keys.did_key(issuer_key.public_key())}
    try:
        full = suites.sign(
            document, issuer_key, method, suite=suite, created="2024-05-05T05:05:05Z"
        )
    except ValueError as exc:
        with pytest.raises(type(exc)):
            suites.sign(
                document, issuer_key, method, suite=suite, canonicalizer=shortcut.canonicalize
            )
        return
    fast = suites.sign(
        document,
        issuer_key,
        method,
        suite=suite,
        created="2024-05-05T05:05:05Z",
        canonicalizer=shortcut.canonicalize,
    )
    assert fast == full
    assert suites.verify(fast, canonicalizer=shortcut.canonicalize).verified
    assert suites.verify(fast).verified


def _change(path: tuple[Any, ...], value: Any) -> Any:
    def apply(doc: dict[str, Any]) -> dict[str, Any]:
        doc = copy.deepcopy(doc)
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return doc

    return apply


_DELETE = object()

OFF_SHAPE = {
    "undefined key": _change(("credentialSubject", "favouriteColour"), "blue"),
    "float dose": _change(("evidence", 0, "dose"), 1.5),
    "null value": _change(("credentialSubject", "name"), None),
    "array of names": _change(("credentialSubject", "name"), ["a", "b"]),
    "relative subject id": _change(("credentialSubject", "id"), "recipients/1"),
    "blank node id": _change(("credentialSubject", "id"), "_:b0"),
    "issuer object": _change(("issuer",), {"id": ISSUER, "name": "Ministry"}),
    "other type": _change(("type",), ["VerifiableCredential", "ProofOfVaccinationCredential", "X"]),
    "no subject type": _change(("credentialSubject", "type"), _DELETE),
    "typed date as number": _change(("evidence", 0, "date"), 20240301),
    "huge integer": _change(("evidence", 0, "dose"), 10**21),
    "address id": _change(("credentialSubject", "address", "id"), "urn:ex:address"),
    "empty evidence list": _change(("evidence",), []),
    "other context": _change(("@context",), [CREDENTIALS_V2_URL]),
    "v1 context": _change(
        ("@context",), ["https://www.w3.org/2018/credentials/v1", VACCINATION_CONTEXT_URL]
    ),
}


@pytest.mark.parametrize("change", list(OFF_SHAPE))
def test_other_shapes_fall_back_to_full_canonicalization(change: str) -> None:
    document = OFF_SHAPE[change](vaccination_credential(ISSUER))
    assert not shortcut.covers(document)
    _same_result(document)


def test_another_loader_always_takes_the_full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table is written for the shipped contexts: another loader could map them otherwise."""
    document = vaccination_credential(ISSUER)
    other = default_loader().with_documents({})
    calls = []
    monkeypatch.setattr(shortcut, "full_canonicalize", lambda d, ld: calls.append(ld) or "x")
    assert shortcut.canonicalize(document, other) == "x"
    assert calls == [other]
    assert shortcut.canonicalize(document) != "x"


def test_proof_options_outside_the_shape_fall_back() -> None:
    context = [CREDENTIALS_V2_URL, VACCINATION_CONTEXT_URL]
    base = {**suites.proof_options(suites.EDDSA_RDFC_2022, METHOD, "2024", "assertionMethod")}
    for options in (
        {**base, "@context": context, "expires": "2030-01-01T00:00:00Z"},
        {**base, "@context": context, "proofPurpose": "somethingElse"},
        {**base, "@context": context, "cryptosuite": "ecdsa-rdfc-2019"},
        {
            **suites.proof_options(
                suites.ED25519_SIGNATURE_2020, METHOD, "2024", "assertionMethod"
            ),
            "@context": context,  # no Ed25519Signature2020 context: an undefined type
        },
    ):
        assert not shortcut.covers(options)
        _same_result(options)


def test_indistinguishable_blank_nodes_take_the_same_n_degree_path() -> None:
    """Two identical evidence objects without ids (and their identical verifier, facility and
    address nodes) need Hash N-Degree Quads: both paths must still agree."""
    document = vaccination_credential(ISSUER)
    evidence = document["evidence"][0]
    del evidence["id"]
    document["evidence"] = [evidence, copy.deepcopy(evidence)]
    document["credentialSubject"]["address"] = copy.deepcopy(evidence["facility"]["address"])
    assert shortcut.covers(document)
    _same_result(document)
    canonical = jsonld.canonicalize(document)  # nine blank nodes, labelled canonically
    assert "_:c14n8" in canonical and "_:c14n9" not in canonical


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
PLACES = [
    ("type",),
    ("issuer",),
    ("credentialSubject", "type"),
    ("credentialSubject", "name"),
    ("credentialSubject", "address"),
    ("evidence",),
    ("evidence", 0, "type"),
    ("evidence", 0, "dose"),
    ("evidence", 0, "verifier"),
    ("nonTransferable",),
]


@settings(max_examples=150, deadline=None, database=None)
@given(place=st.sampled_from(PLACES), value=JSON)
def test_any_json_anywhere_gives_the_full_paths_answer(place: tuple[Any, ...], value: Any) -> None:
    """Random JSON in place of a field: the shortcut answers as the full path does, whether
    it covers the document or not (and never fails differently)."""
    _same_result(_change(place, value)(vaccination_credential(ISSUER)))


@settings(max_examples=60, deadline=None, database=None)
@given(purpose=JSON, created=JSON, method=JSON)
def test_any_json_in_proof_options_gives_the_full_paths_answer(
    purpose: Any, created: Any, method: Any
) -> None:
    options = {
        **suites.proof_options(suites.EDDSA_RDFC_2022, METHOD, "2024", "assertionMethod"),
        "@context": [CREDENTIALS_V2_URL, VACCINATION_CONTEXT_URL],
        "proofPurpose": purpose,
        "created": created,
        "verificationMethod": method,
    }
    _same_result(options)
