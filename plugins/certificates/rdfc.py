"""RDF Dataset Canonicalization (RDFC-1.0, W3C Recommendation 2024) over pyld's RDF dataset.

pyld ships URDNA2015, whose N-Quads escaping predates RDFC-1.0 (it leaves U+0008, U+000C, the
other C0 controls and U+007F raw, where RDFC-1.0 and rdf-canonize write `\\b`, `\\f`, `\\uXXXX`),
and that escaping also feeds the blank-node hashes, so patching its output is not enough. This is
RDFC-1.0 written out, with the canonical escaping and a work limit against "poisoned" blank-node
graphs: like rdf-canonize (maxWorkFactor 1), at most N runs of Hash N-Degree Quads for N blank
nodes that share a first-degree hash, plus a bound on the permutations tried.

Quads are sorted in Unicode code point order, as RDFC-1.0 specifies (Python's string order).
rdf-canonize (JavaScript, behind Digital Bazaar's verifier) sorts by UTF-16 code units instead;
the two differ only when two quads first differ where one has a character in U+E000-U+FFFF and
the other one above U+FFFF. `order="utf16"` reproduces rdf-canonize; `order_sensitive` tells
whether a canonical text could sort differently at all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
RDF_LANGSTRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"

DEFAULT_MAX_PERMUTATIONS = 100_000
CODE_POINT = "codepoint"
UTF16 = "utf16"
_HIGH_BMP = re.compile("[\ue000-\uffff]")


def order_sensitive(text: str) -> bool:
    """Whether code point and UTF-16 order could sort `text`'s lines differently (it holds
    characters of both U+E000-U+FFFF and above U+FFFF)."""
    if text.isascii() or len(text.encode("utf-16-le", "surrogatepass")) == 2 * len(text):
        return False  # no character above U+FFFF (the quick tests)
    return _HIGH_BMP.search(text) is not None


def _utf16_key(line: str) -> bytes:
    return line.encode("utf-16-be", "surrogatepass")


class CanonicalizationError(ValueError):
    """The dataset cannot be canonicalized (bad text, or too much work)."""


class WorkLimitError(CanonicalizationError):
    """Canonicalization stopped: the blank-node graph needs more work than the limit allows."""


# -- canonical N-Quads ------------------------------------------------------------------------

_LITERAL_ESCAPES = {i: f"\\u{i:04X}" for i in [*range(0x20), 0x7F]}
_LITERAL_ESCAPES.update(
    {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}
)
_LITERAL_NEEDS_ESCAPE = re.compile('[\\x00-\\x1f\\x7f"\\\\]')
_IRI_ESCAPES = {i: f"\\u{i:04X}" for i in [*range(0x21), *map(ord, '<>"{}|^`\\')]}
_IRI_NEEDS_ESCAPE = re.compile('[\\x00-\\x20<>"{}|^`\\\\]')


def escape_literal(value: str) -> str:
    """A string literal's lexical form escaped as canonical N-Quads (RDFC-1.0) write it."""
    if _LITERAL_NEEDS_ESCAPE.search(value) is None:
        return value
    return value.translate(_LITERAL_ESCAPES)


def escape_iri(value: str) -> str:
    """An IRI escaped for `<...>` in N-Quads (UCHAR for characters IRIREF does not allow)."""
    if _IRI_NEEDS_ESCAPE.search(value) is None:
        return value
    return value.translate(_IRI_ESCAPES)


def term_nquads(term: dict[str, Any]) -> str:
    """One non-blank RDF term of pyld's dataset (IRI or literal) as N-Quads text."""
    if term["type"] == "IRI":
        return f"<{escape_iri(term['value'])}>"
    text = f'"{escape_literal(term["value"])}"'
    datatype = term.get("datatype") or XSD_STRING
    if datatype == RDF_LANGSTRING:
        return f"{text}@{term['language']}" if term.get("language") else text
    if datatype != XSD_STRING:
        return f"{text}^^<{escape_iri(datatype)}>"
    return text


# A quad: (subject, predicate, object, graph); subject/object/graph are either ("b", label) for
# a blank node or ("t", text) for an already serialized IRI/literal; graph is None for default.
Term = tuple[str, str]
Quad = tuple[Term, str, Term, Term | None]


def _component(term: dict[str, Any]) -> Term:
    if term["type"] == "blank node":
        return ("b", term["value"])
    return ("t", term_nquads(term))


def dataset_quads(dataset: dict[str, list[dict[str, Any]]]) -> list[Quad]:
    """pyld's dataset ({graph name: [triple]}) as quads, duplicates removed."""
    quads: dict[Quad, None] = {}
    for graph_name, triples in dataset.items():
        if graph_name == "@default":
            graph: Term | None = None
        elif graph_name.startswith("_:"):
            graph = ("b", graph_name)
        else:
            graph = ("t", f"<{escape_iri(graph_name)}>")
        for triple in triples:
            quad = (
                _component(triple["subject"]),
                f"<{escape_iri(triple['predicate']['value'])}>",
                _component(triple["object"]),
                graph,
            )
            quads[quad] = None
    return list(quads)


def _serialize(quad: Quad, label: Any) -> str:
    s, p, o, g = quad
    subject = label(s[1]) if s[0] == "b" else s[1]
    obj = label(o[1]) if o[0] == "b" else o[1]
    if g is None:
        return f"{subject} {p} {obj} .\n"
    graph = label(g[1]) if g[0] == "b" else g[1]
    return f"{subject} {p} {obj} {graph} .\n"


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError(f"text is not valid Unicode (lone surrogate): {exc}") from None


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(_utf8(text)).hexdigest()


# -- identifier issuer ------------------------------------------------------------------------


class _Issuer:
    __slots__ = ("counter", "issued", "order", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.counter = 0
        self.issued: dict[str, str] = {}
        self.order: list[str] = []

    def issue(self, existing: str) -> str:
        found = self.issued.get(existing)
        if found is not None:
            return found
        new = f"{self.prefix}{self.counter}"
        self.counter += 1
        self.issued[existing] = new
        self.order.append(existing)
        return new

    def copy(self) -> _Issuer:
        other = _Issuer(self.prefix)
        other.counter = self.counter
        other.issued = dict(self.issued)
        other.order = list(self.order)
        return other


def _permutations(items: list[str]) -> Iterator[list[str]]:
    """All orderings of `items`, from the sorted one, in Steinhaus-Johnson-Trotter order
    (the order rdf-canonize and pyld use, so ties are broken the same way)."""
    elements = sorted(items)
    left = dict.fromkeys(elements, True)
    last = len(elements) - 1
    while True:
        yield list(elements)
        mobile, pos = None, 0
        for i, e in enumerate(elements):
            looking_left = left[e]
            if (mobile is None or e > mobile) and (
                (looking_left and i > 0 and e > elements[i - 1])
                or (not looking_left and i < last and e > elements[i + 1])
            ):
                mobile, pos = e, i
        if mobile is None:
            return
        swap = pos - 1 if left[mobile] else pos + 1
        elements[pos], elements[swap] = elements[swap], mobile
        for e in elements:
            if e > mobile:
                left[e] = not left[e]


# -- the algorithm ----------------------------------------------------------------------------


class _Canonicalizer:
    def __init__(
        self, quads: list[Quad], max_work_factor: int, max_permutations: int, order: str
    ) -> None:
        if order not in (CODE_POINT, UTF16):
            raise ValueError(f"order is {CODE_POINT!r} or {UTF16!r}")
        self.sort_key = _utf16_key if order == UTF16 else None
        self.quads = quads
        self.canonical = _Issuer("_:c14n")
        self.bnode_quads: dict[str, list[Quad]] = {}
        self.first_degree: dict[str, str] = {}
        self.max_work_factor = max_work_factor
        self.remaining_deep = 0
        self.max_deep = 0
        self.remaining_permutations = max_permutations
        # quads without blank nodes serialize the same whatever the labels: once, here
        self.fixed_lines: list[str] = []
        self.labelled: list[Quad] = []
        bnode_quads = self.bnode_quads
        for quad in quads:
            s, p, o, g = quad
            if s[0] != "b" and o[0] != "b" and (g is None or g[0] != "b"):
                self.fixed_lines.append(
                    f"{s[1]} {p} {o[1]} .\n" if g is None else f"{s[1]} {p} {o[1]} {g[1]} .\n"
                )
                continue
            self.labelled.append(quad)
            for component in (s, o, g):
                if component is not None and component[0] == "b":
                    entries = bnode_quads.setdefault(component[1], [])
                    if not entries or entries[-1] is not quad:
                        entries.append(quad)

    def run(self) -> str:
        if len(self.bnode_quads) == 1:
            # one blank node is unique whatever its hash: it is issued _:c14n0
            self.canonical.issue(next(iter(self.bnode_quads)))
            return self._serialize_all()
        hash_to_bnodes: dict[str, list[str]] = {}
        for bnode in self.bnode_quads:
            hash_to_bnodes.setdefault(self._hash_first_degree(bnode), []).append(bnode)
        non_unique: list[list[str]] = []
        for h in sorted(hash_to_bnodes):
            bnodes = hash_to_bnodes[h]
            if len(bnodes) > 1:
                non_unique.append(bnodes)
            else:
                self.canonical.issue(bnodes[0])
        count = sum(len(b) for b in non_unique)
        self.max_deep = count**self.max_work_factor
        self.remaining_deep = self.max_deep
        for bnodes in non_unique:
            results = []
            for bnode in bnodes:
                if bnode in self.canonical.issued:
                    continue
                issuer = _Issuer("_:b")
                issuer.issue(bnode)
                results.append(self._hash_n_degree(bnode, issuer))
            for _h, issuer in sorted(results, key=lambda r: r[0]):
                for existing in issuer.order:
                    self.canonical.issue(existing)
        return self._serialize_all()

    def _serialize_all(self) -> str:
        label = self.canonical.issued.__getitem__
        lines = self.fixed_lines + [_serialize(q, label) for q in self.labelled]
        lines.sort(key=self.sort_key)
        text = "".join(lines)
        _utf8(text)  # N-Quads are UTF-8: refuse lone surrogates here, not when hashed later
        return text

    def _hash_first_degree(self, bnode: str) -> str:
        found = self.first_degree.get(bnode)
        if found is not None:
            return found

        def label(value: str) -> str:
            return "_:a" if value == bnode else "_:z"

        lines = sorted((_serialize(q, label) for q in self.bnode_quads[bnode]), key=self.sort_key)
        result = self.first_degree[bnode] = _sha256_hex("".join(lines))
        return result

    def _hash_related(self, related: str, quad: Quad, issuer: _Issuer, position: str) -> str:
        if related in self.canonical.issued:
            identifier = self.canonical.issued[related]
        elif related in issuer.issued:
            identifier = issuer.issued[related]
        else:
            identifier = self._hash_first_degree(related)
        predicate = quad[1] if position != "g" else ""
        return _sha256_hex(position + predicate + identifier)

    def _hash_n_degree(self, bnode: str, issuer: _Issuer) -> tuple[str, _Issuer]:  # noqa: C901
        if self.remaining_deep <= 0:
            raise WorkLimitError(
                f"blank-node graph too complex to canonicalize: more than {self.max_deep} "
                "Hash N-Degree Quads runs needed (work limit)"
            )
        self.remaining_deep -= 1
        hash_to_related: dict[str, list[str]] = {}
        for quad in self.bnode_quads[bnode]:
            for position, component in (("s", quad[0]), ("o", quad[2]), ("g", quad[3])):
                if component is not None and component[0] == "b" and component[1] != bnode:
                    h = self._hash_related(component[1], quad, issuer, position)
                    hash_to_related.setdefault(h, []).append(component[1])
        data: list[str] = []
        for related_hash in sorted(hash_to_related):
            data.append(related_hash)
            chosen_path = ""
            chosen_issuer: _Issuer | None = None
            # (a path already greater than the chosen one only grows greater: skip it, as
            # rdf-canonize does; the same pruning as the spec's length-and-order test)
            for permutation in _permutations(hash_to_related[related_hash]):
                self._count_permutation()
                issuer_copy = issuer.copy()
                path = ""
                recursion: list[str] = []
                skip = False
                for related in permutation:
                    if related in self.canonical.issued:
                        path += self.canonical.issued[related]
                    else:
                        if related not in issuer_copy.issued:
                            recursion.append(related)
                        path += issuer_copy.issue(related)
                    if chosen_path and path > chosen_path:
                        skip = True
                        break
                if skip:
                    continue
                for related in recursion:
                    result_hash, result_issuer = self._hash_n_degree(related, issuer_copy)
                    path += issuer_copy.issue(related)
                    path += f"<{result_hash}>"
                    issuer_copy = result_issuer
                    if chosen_path and path > chosen_path:
                        skip = True
                        break
                if skip:
                    continue
                if not chosen_path or path < chosen_path:
                    chosen_path = path
                    chosen_issuer = issuer_copy
            data.append(chosen_path)
            assert chosen_issuer is not None
            issuer = chosen_issuer
        return _sha256_hex("".join(data)), issuer

    def _count_permutation(self) -> None:
        self.remaining_permutations -= 1
        if self.remaining_permutations < 0:
            raise WorkLimitError(
                "blank-node graph too complex to canonicalize: too many permutations (work limit)"
            )


def canonicalize_quads(
    quads: Iterable[Quad],
    *,
    max_work_factor: int = 1,
    max_permutations: int = DEFAULT_MAX_PERMUTATIONS,
    order: str = CODE_POINT,
) -> str:
    """Canonical N-Quads (RDFC-1.0) of `quads`, raising `WorkLimitError` past the work limit
    (also when Hash N-Degree Quads would recurse deeper than Python allows: a long chain of
    blank nodes that share their hashes, with a raised work factor)."""
    try:
        return _Canonicalizer(list(quads), max_work_factor, max_permutations, order).run()
    except RecursionError:
        raise WorkLimitError(
            "blank-node graph too complex to canonicalize: Hash N-Degree Quads recursed too "
            "deeply (work limit)"
        ) from None


def canonicalize_dataset(
    dataset: dict[str, list[dict[str, Any]]],
    *,
    max_work_factor: int = 1,
    max_permutations: int = DEFAULT_MAX_PERMUTATIONS,
    order: str = CODE_POINT,
) -> str:
    """Canonical N-Quads (RDFC-1.0) of pyld's RDF dataset (the output of `to_rdf`)."""
    return canonicalize_quads(
        dataset_quads(dataset),
        max_work_factor=max_work_factor,
        max_permutations=max_permutations,
        order=order,
    )
