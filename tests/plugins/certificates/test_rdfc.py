"""RDFC-1.0 (`plugins/certificates/rdfc.py`) against the W3C conformance suite, its escaping,
and its work limit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pyld import nquads as pyld_nquads

from open_registry.plugins.certificates.rdfc import (
    WorkLimitError,
    canonicalize_dataset,
    escape_iri,
    escape_literal,
)
from tests.plugins.certificates.conftest import FIXTURES, read_json

SUITE = FIXTURES / "rdf-canon"

# -- a small N-Quads reader for the suite's inputs (pyld's reader mis-reads \b, \f, \u) --------

_UNESCAPE = re.compile(r'\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|([tbnrf"\'\\]))')
_ECHAR = {"t": "\t", "b": "\b", "n": "\n", "r": "\r", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
_TERM = re.compile(
    r'\s*(?:<(?P<iri>[^>]*)>|_:(?P<bnode>[^\s]+)|"(?P<lit>(?:[^"\\]|\\.)*)"'
    r"(?:\^\^<(?P<dt>[^>]*)>|@(?P<lang>[a-zA-Z]+(?:-[a-zA-Z0-9]+)*))?)"
)


def _unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1) or m.group(2):
            return chr(int(m.group(1) or m.group(2), 16))
        return _ECHAR[m.group(3)]

    return _UNESCAPE.sub(one, text)


def _term(m: re.Match[str]) -> dict[str, Any]:
    if m.group("iri") is not None:
        return {"type": "IRI", "value": _unescape(m.group("iri"))}
    if m.group("bnode") is not None:
        return {"type": "blank node", "value": "_:" + m.group("bnode")}
    term: dict[str, Any] = {"type": "literal", "value": _unescape(m.group("lit"))}
    if m.group("lang"):
        term["datatype"] = pyld_nquads.RDF_LANGSTRING
        term["language"] = m.group("lang")
    else:
        term["datatype"] = _unescape(m.group("dt")) if m.group("dt") else pyld_nquads.XSD_STRING
    return term


def read_nquads(text: str) -> dict[str, list[dict[str, Any]]]:
    """N-Quads -> pyld's dataset shape ({graph: [triple]})."""
    dataset: dict[str, list[dict[str, Any]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert line.endswith("."), line
        pos, terms = 0, []
        body = line[:-1]
        while body[pos:].strip():
            m = _TERM.match(body, pos)
            assert m, f"cannot read {body[pos:]!r}"
            terms.append(_term(m))
            pos = m.end()
        assert len(terms) in (3, 4), line
        graph = terms[3]["value"] if len(terms) == 4 else "@default"
        triple = {"subject": terms[0], "predicate": terms[1], "object": terms[2]}
        dataset.setdefault(graph, []).append(triple)
    return dataset


def _suite(kind: str) -> list[Any]:
    manifest = read_json(SUITE / "manifest.jsonld")
    return [
        pytest.param(e, id=e["id"].lstrip("#")) for e in manifest["entries"] if e["type"] == kind
    ]


def _read(relative: str) -> str:
    return (SUITE / relative).read_text(encoding="utf-8")


# the work factor allowed per complexity class (rdf-canonize's levels; 1 is the default)
WORK_FACTOR = {"low": 1, "medium": 2, "high": 3}


@pytest.mark.parametrize("entry", _suite("rdfc:RDFC10EvalTest"))
def test_w3c_rdfc10_evaluation_suite(entry: dict[str, Any]) -> None:
    dataset = read_nquads(_read(entry["action"]))
    if entry.get("hashAlgorithm", "SHA256") != "SHA256":
        pytest.skip("only SHA-256 (the hash every Data Integrity suite here uses)")
    factor = WORK_FACTOR[entry["computationalComplexity"]]
    assert canonicalize_dataset(dataset, max_work_factor=factor) == _read(entry["result"])


@pytest.mark.parametrize("entry", _suite("rdfc:RDFC10NegativeEvalTest"))
def test_w3c_poisoned_graph_stops_at_the_work_limit(entry: dict[str, Any]) -> None:
    """The suite's negative test (a 10-node blank-node clique) must be refused, not computed:
    the limit counts Hash N-Degree Quads runs (at most one per non-unique blank node, as
    rdf-canonize's default) and permutations, so it stops after a bounded amount of work."""
    dataset = read_nquads(_read(entry["action"]))
    with pytest.raises(WorkLimitError, match="work limit"):
        canonicalize_dataset(dataset)
    # the permutation bound alone also stops it (deep runs unbounded here)
    with pytest.raises(WorkLimitError, match="permutations"):
        canonicalize_dataset(
            read_nquads(_read(entry["action"])), max_work_factor=50, max_permutations=10_000
        )


def test_literal_escaping_is_rdfc10() -> None:
    # RDFC-1.0: \b \t \n \f \r \" \\ as ECHAR, other C0 controls and DEL as \uXXXX (upper hex),
    # everything else (C1 controls, non-ASCII) as itself
    assert escape_literal('\b\t\n\f\r"\\') == '\\b\\t\\n\\f\\r\\"\\\\'
    assert (
        escape_literal("\x00\x01\x0b\x0e\x1f\x7f") == "\\u0000\\u0001\\u000B\\u000E\\u001F\\u007F"
    )
    assert escape_literal("\x80 é ∞ 🌃 \u2028") == "\x80 é ∞ 🌃 \u2028"
    # pyld's own escaping leaves these raw (the trap this module exists for)
    assert pyld_nquads.escape("\b\f\x01\x7f") == "\b\f\x01\x7f"


def test_iri_escaping() -> None:
    assert escape_iri("urn:ex:a b") == "urn:ex:a\\u0020b"
    assert escape_iri('urn:ex:<>"{}|^`\\') == (
        "urn:ex:\\u003C\\u003E\\u0022\\u007B\\u007D\\u007C\\u005E\\u0060\\u005C"
    )
    assert escape_iri("urn:ex:∞") == "urn:ex:∞"


def test_lone_surrogate_is_refused() -> None:
    from open_registry.plugins.certificates.rdfc import CanonicalizationError

    dataset = read_nquads('_:a <urn:ex:p> "x" .\n')
    dataset["@default"][0]["object"]["value"] = "\ud800"
    with pytest.raises(CanonicalizationError, match="surrogate"):
        canonicalize_dataset(dataset)


def test_suite_files_present() -> None:
    assert len(list(Path(SUITE / "rdfc10").glob("*-in.nq"))) >= 60


def test_code_point_and_utf16_orders() -> None:
    from open_registry.plugins.certificates.rdfc import UTF16, order_sensitive

    text = '<urn:ex:s> <urn:ex:p> "\uff01" .\n<urn:ex:s> <urn:ex:p> "\U0001f600" .\n'
    spec = canonicalize_dataset(read_nquads(text))
    js = canonicalize_dataset(read_nquads(text), order=UTF16)
    assert spec.index("\uff01") < spec.index("\U0001f600")  # RDFC-1.0: code point order
    assert js.index("\U0001f600") < js.index("\uff01")  # rdf-canonize: UTF-16 code units
    assert order_sensitive(spec)
    assert not order_sensitive('"\uff01" "\u00e9"') and not order_sensitive('"\U0001f600"')
