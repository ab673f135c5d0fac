r"""Record validation: JSON Schema 2020-12 with format checks, every failing field reported.

Two engines are combined. `jsonschema` is the reference: complete 2020-12 and good error detail,
but ~30-90 us per record. `fastjsonschema` compiles a schema to Python code and answers
valid/invalid several times faster, but speaks draft-07 and stops at the first error. A record is
first checked by the compiled code; only when it fails (rare on real data) does jsonschema run to
list every error. The compiled path is used only when the schema uses keywords whose meaning is
the same in draft-07 and 2020-12 (`fast_path_supported`); otherwise jsonschema does all the work.
`tests/generators/test_validators.py` checks with Hypothesis that both engines agree.

Patterns (`pattern`, and the names in `patternProperties`) are ECMA-262 regular expressions, and
both engines run them on RE2 (`google-re2`), which matches in time linear in the input: Python's
`re` backtracks, and a pattern such as `^(a+)+$` takes exponential time on "aaa...a!". Each
pattern is translated for ECMA-262's meaning (`\d`, `\w`, `\b` ASCII-only, `\s` ECMA's white
space, `.` stopping at line terminators, `$` the end of input, `\uXXXX`, `\p{...}`) and compiled
when the validator is built: a pattern that is not ECMA-262, or that needs what RE2 lacks
(backreferences, lookahead/lookbehind), raises `PatternError` then, naming it and where it is,
never at request time. Without google-re2 installed, Python's `re` runs the same translation
(`PATTERN_ENGINE` says which; the fallback has no time bound).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import fastjsonschema
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from jsonschema.validators import Draft202012Validator, extend

from open_registry.generators.errors import pointer
from open_registry.generators.formats import FORMATS
from open_registry.generators.memo import ContentCache, canonical_key

try:  # RE2: linear-time matching (PyPI google-re2)
    import re2 as _re2  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - the fallback when the wheel is unavailable
    _re2 = None

#: the engine that runs schema patterns: "re2" (linear time) or "re" (fallback: backtracking)
PATTERN_ENGINE = "re2" if _re2 is not None else "re"

# Keywords with identical semantics in draft-07 and 2020-12 (as fastjsonschema implements them).
_SAME_IN_BOTH = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minProperties",
        "maxProperties",
        "patternProperties",
        "propertyNames",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "title",
        "description",
        "examples",
        "default",
        "$comment",
        "$schema",
        "readOnly",
        "writeOnly",
        "deprecated",
    }
)
# Not listed above, because the engines differ: `multipleOf` (fastjsonschema divides floats, so
# 1e20 is a multiple of 3), `contentMediaType` / `contentEncoding` (fastjsonschema asserts them;
# in 2020-12 they only annotate), and any `format` outside `FORMATS` (fastjsonschema checks
# hostname, ipv4, regex...; for us an unknown format only annotates).
# Keywords whose value is a map of name -> subschema, or a list of subschemas.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_SCHEMA_ONE = frozenset(
    {"items", "additionalProperties", "propertyNames", "not", "if", "then", "else"}
)


@dataclass(frozen=True)
class FieldError:
    """One failing value: where (JSON pointer into the body), why, and which keyword failed."""

    pointer: str
    message: str
    keyword: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message, "keyword": self.keyword}


def fast_path_supported(schema: Any, formats: Mapping[str, Any] = FORMATS) -> bool:
    """True when every keyword in `schema` means the same to fastjsonschema as to 2020-12."""
    return _fast_ok(schema, formats)


def _fast_ok(schema: Any, formats: Mapping[str, Any]) -> bool:
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, Mapping):
        return False
    for key, value in schema.items():
        if key.startswith("x-"):
            continue
        if key not in _SAME_IN_BOTH:
            return False
        if key == "format" and value not in formats:
            return False
        if key in _SCHEMA_MAPS:
            if not isinstance(value, Mapping) or not all(
                _fast_ok(v, formats) for v in value.values()
            ):
                return False
        elif key in _SCHEMA_LISTS:
            if not isinstance(value, list) or not all(_fast_ok(v, formats) for v in value):
                return False
        elif (key in _SCHEMA_ONE and not _fast_ok(value, formats)) or (
            key == "items" and not isinstance(value, (Mapping, bool))
        ):
            return False
    return True


def _format_checker(formats: Mapping[str, Any]) -> FormatChecker:
    checker = FormatChecker(formats=())
    for name, func in formats.items():
        checker.checks(name)(_string_only(func))
    return checker


def _string_only(func: Any) -> Any:
    def check(value: object) -> bool:
        return not isinstance(value, str) or func(value)

    return check


def _strip_x(schema: Any) -> Any:
    """fastjsonschema rejects unknown keywords it cannot ignore; drop our `x-` annotations."""
    if isinstance(schema, Mapping):
        return {k: _strip_x(v) for k, v in schema.items() if not k.startswith("x-")}
    if isinstance(schema, list):
        return [_strip_x(v) for v in schema]
    return schema


# -- patterns: ECMA-262 on RE2 --------------------------------------------------------------


class PatternError(ValueError):
    """A `pattern` (or `patternProperties` name) that cannot be run: not ECMA-262, or needing
    what the linear-time engine lacks (backreferences, lookahead/lookbehind)."""

    def __init__(self, message: str, issues: list[tuple[str, str]] | None = None):
        super().__init__(message)
        #: (JSON pointer into the schema, message) for each pattern that cannot be run
        self.issues = issues or []


_MAX_CODE_POINT = 0x10FFFF
_DIGIT = ((0x30, 0x39),)
_WORD = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
# ECMA-262 WhiteSpace and LineTerminator (what `\s` matches)
_SPACE = (
    (0x09, 0x0D),
    (0x20, 0x20),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
    (0xFEFF, 0xFEFF),
)
_LINE_TERMINATORS = ((0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029))
_SHORTHANDS = {"d": _DIGIT, "w": _WORD, "s": _SPACE}
_CONTROL_ESCAPES = {"t": 0x09, "n": 0x0A, "v": 0x0B, "f": 0x0C, "r": 0x0D}
_SYNTAX_CHARACTERS = frozenset("^$\\.*+?()[]{}|/-")
_QUANTIFIER = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
_GROUP_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*>")
_PROPERTY_NAME = re.compile(r"[A-Za-z0-9_]+(?:=[A-Za-z0-9_]+)?")
# General_Category values (ECMA-262 table "Value aliases"): long name -> short name
_GENERAL_CATEGORIES = {
    "Letter": "L",
    "Cased_Letter": "LC",
    "Uppercase_Letter": "Lu",
    "Lowercase_Letter": "Ll",
    "Titlecase_Letter": "Lt",
    "Modifier_Letter": "Lm",
    "Other_Letter": "Lo",
    "Mark": "M",
    "Combining_Mark": "M",
    "Nonspacing_Mark": "Mn",
    "Spacing_Mark": "Mc",
    "Enclosing_Mark": "Me",
    "Number": "N",
    "Decimal_Number": "Nd",
    "digit": "Nd",
    "Letter_Number": "Nl",
    "Other_Number": "No",
    "Punctuation": "P",
    "punct": "P",
    "Connector_Punctuation": "Pc",
    "Dash_Punctuation": "Pd",
    "Open_Punctuation": "Ps",
    "Close_Punctuation": "Pe",
    "Initial_Punctuation": "Pi",
    "Final_Punctuation": "Pf",
    "Other_Punctuation": "Po",
    "Symbol": "S",
    "Math_Symbol": "Sm",
    "Currency_Symbol": "Sc",
    "Modifier_Symbol": "Sk",
    "Other_Symbol": "So",
    "Separator": "Z",
    "Space_Separator": "Zs",
    "Line_Separator": "Zl",
    "Paragraph_Separator": "Zp",
    "Other": "C",
    "Control": "Cc",
    "cntrl": "Cc",
    "Format": "Cf",
    "Surrogate": "Cs",
    "Private_Use": "Co",
}
_SHORT_CATEGORIES = frozenset(_GENERAL_CATEGORIES.values())

# what the translator reads: a code point, a set of code points (ranges; `negated`), Unicode
# property escapes (RE2 syntax), or an assertion/backreference written as is
_Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Set:
    ranges: _Ranges = ()
    negated: bool = False
    properties: tuple[str, ...] = ()  # RE2 `\p{..}`/`\P{..}` items (never with ranges)


class _Translator:
    """ECMA-262 (with the `u` flag, as JSON Schema asks) -> RE2 or Python `re` syntax."""

    def __init__(self, pattern: str, engine: str) -> None:
        self.p = pattern
        self.pos = 0
        self.engine = engine

    def fail(self, message: str) -> PatternError:
        return PatternError(f"pattern {self.p!r}: {message}")

    # -- output ---------------------------------------------------------------------------
    def lit(self, cp: int) -> str:
        """A code point, escaped so that it is literal in and outside classes."""
        if cp < 0x80 and (chr(cp).isalnum() or cp == 0x5F):
            return chr(cp)
        if self.engine == "re2":
            return f"\\x{{{cp:X}}}"
        if cp <= 0xFF:
            return f"\\x{cp:02X}"
        return f"\\u{cp:04X}" if cp <= 0xFFFF else f"\\U{cp:08X}"

    def ranges(self, ranges: Iterable[tuple[int, int]]) -> str:
        return "".join(
            self.lit(lo) if lo == hi else f"{self.lit(lo)}-{self.lit(hi)}" for lo, hi in ranges
        )

    def char_class(self, items: Sequence[_Set | int], negated: bool) -> str:
        r"""A class of code points and sets; with `\D`, `\W`, `\S` or `\P{..}` inside, the
        class is what remains of a finite set (its complement), computed here."""
        plain: list[tuple[int, int]] = []
        properties: list[str] = []
        complements: list[_Ranges] = []
        for item in items:
            if isinstance(item, int):
                plain.append((item, item))
            elif item.properties:
                properties.extend(item.properties)
            elif item.negated:
                complements.append(item.ranges)
            else:
                plain.extend(item.ranges)
        if not complements:
            body = self.ranges(plain) + "".join(properties)
            if not body:  # ECMA-262 `[]` matches nothing, `[^]` anything
                everything = self.ranges([(0, _MAX_CODE_POINT)])
                return f"[{everything}]" if negated else f"[^{everything}]"
            return f"[^{body}]" if negated else f"[{body}]"
        # the union with complement(F1) | complement(F2)... is complement(F1 & F2 - the rest)
        finite = set.intersection(
            *({c for lo, hi in r for c in range(lo, hi + 1)} for r in complements)
        )
        covered = self.matcher(plain, properties)
        remaining = sorted(c for c in finite if not covered(c))
        rest = self.ranges((c, c) for c in remaining)
        if negated:
            return f"[{rest}]" if rest else self.char_class([], negated=False)
        return f"[^{rest}]" if rest else self.char_class([], negated=True)

    def matcher(
        self, ranges: list[tuple[int, int]], properties: list[str]
    ) -> Callable[[int], bool]:
        probe = None
        if properties:
            if _re2 is None:  # pragma: no cover - properties are refused earlier without RE2
                raise self.fail("Unicode property escapes need the RE2 engine")
            probe = _re2_compile(f"[{''.join(properties)}]")

        def covered(cp: int) -> bool:
            if any(lo <= cp <= hi for lo, hi in ranges):
                return True
            return probe is not None and probe.search(chr(cp)) is not None

        return covered

    # -- input ----------------------------------------------------------------------------
    def translate(self) -> str:
        p, out = self.p, []
        while self.pos < len(p):
            c = p[self.pos]
            self.pos += 1
            if c == "\\":
                out.append(self.atom_outside(self.escape(in_class=False)))
            elif c == "[":
                out.append(self.char_class_at())
            elif c == ".":
                out.append(self.char_class([_Set(_LINE_TERMINATORS)], negated=True))
            elif c == "$":
                out.append("\\z" if self.engine == "re2" else "\\Z")
            elif c == "(":
                out.append(self.group())
            elif c == "{":
                m = _QUANTIFIER.match(p, self.pos - 1)
                if m:
                    out.append(m.group(0))
                    self.pos = m.end()
                else:
                    out.append("\\{")  # Annex B: a brace that is no quantifier is literal
            elif c in "}]":
                out.append("\\" + c)
            else:  # ^ ) | * + ? and every other character mean the same in all three
                out.append(c)
        text = "".join(out)
        return text if self.engine == "re2" else "(?a)" + text  # (?a): ECMA's ASCII \b

    def atom_outside(self, atom: _Set | int | str) -> str:
        if isinstance(atom, str):
            return atom
        if isinstance(atom, int):
            return self.lit(atom)
        if atom.properties and len(atom.properties) == 1:
            return atom.properties[0]
        return self.char_class([atom], negated=False)

    def group(self) -> str:
        p = self.p
        if not p.startswith("?", self.pos):
            return "("
        rest = p[self.pos : self.pos + 3]
        if rest.startswith("?:"):
            self.pos += 2
            return "(?:"
        if rest.startswith(("?=", "?!")) or rest in ("?<=", "?<!"):
            if self.engine == "re2":
                raise self.fail(
                    "lookahead and lookbehind ((?=, (?!, (?<=, (?<!) need a backtracking "
                    "engine; patterns run on RE2, in linear time, which has none"
                )
            self.pos += len(rest) if rest.startswith("?<") else 2
            return "(" + (rest if rest.startswith("?<") else rest[:2])
        if rest.startswith("?<"):
            m = _GROUP_NAME.match(p, self.pos + 2)
            if not m:
                raise self.fail("a named group is (?<name>...)")
            self.pos = m.end()
            return f"(?P<{m.group(0)[:-1]}>"
        raise self.fail(f"'({rest}' is not a group of ECMA-262 regular expressions")

    def char_class_at(self) -> str:
        p = self.p
        items: list[_Set | int] = []
        negated = p.startswith("^", self.pos)
        if negated:
            self.pos += 1
        while True:
            if self.pos >= len(p):
                raise self.fail("a character class ([...]) is not closed")
            if p[self.pos] == "]":
                self.pos += 1
                return self.char_class(items, negated)
            low = self.class_atom()
            if p.startswith("-", self.pos) and self.pos + 1 < len(p) and p[self.pos + 1] != "]":
                self.pos += 1
                high = self.class_atom()
                if not isinstance(low, int) or not isinstance(high, int):
                    raise self.fail("a range in a class ([a-z]) needs one character at each end")
                if low > high:
                    raise self.fail(f"the range {chr(low)!r}-{chr(high)!r} is out of order")
                items.append(_Set(((low, high),)))
            else:
                items.append(low)

    def class_atom(self) -> _Set | int:
        c = self.p[self.pos]
        self.pos += 1
        if c != "\\":
            return ord(c)
        atom = self.escape(in_class=True)
        if isinstance(atom, str):  # pragma: no cover - escape() gives no assertion in a class
            raise self.fail(f"{atom} cannot be used in a class")
        return atom

    def escape(self, *, in_class: bool) -> _Set | int | str:  # noqa: C901
        p = self.p
        if self.pos >= len(p):
            raise self.fail("it ends with a lone backslash")
        c = p[self.pos]
        self.pos += 1
        if c.lower() in _SHORTHANDS:
            return _Set(_SHORTHANDS[c.lower()], negated=c.isupper())
        if c in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[c]
        if c == "b":
            return 0x08 if in_class else "\\b"
        if c == "B" and not in_class:
            return "\\B"
        if c == "0" and not p[self.pos : self.pos + 1].isdigit():
            return 0
        if c.isdigit() or (c == "k" and p.startswith("<", self.pos)):
            if in_class or self.engine == "re2":
                raise self.fail(
                    "backreferences (\\1, \\k<name>) need a backtracking engine; patterns run "
                    "on RE2, in linear time, which has none"
                )
            start = self.pos - 1
            while self.pos < len(p) and p[self.pos].isdigit():
                self.pos += 1
            return "\\" + p[start : self.pos]
        if c == "c":
            letter = p[self.pos : self.pos + 1]
            if not (letter.isascii() and letter.isalpha()):
                raise self.fail("\\c must be followed by a letter (a control character)")
            self.pos += 1
            return ord(letter) % 32
        if c == "x":
            digits = p[self.pos : self.pos + 2]
            if len(digits) != 2 or not _is_hex(digits):
                raise self.fail("\\x must be followed by two hex digits")
            self.pos += 2
            return int(digits, 16)
        if c == "u":
            return self.unicode_escape()
        if c in "pP":
            return self.property(negated=c == "P")
        if c in _SYNTAX_CHARACTERS:
            return ord(c)
        raise self.fail(f"\\{c} is not an escape of ECMA-262 regular expressions")

    def unicode_escape(self) -> int:
        p = self.p
        if p.startswith("{", self.pos):
            end = p.find("}", self.pos)
            digits = p[self.pos + 1 : end] if end > 0 else ""
            if not digits or not _is_hex(digits) or int(digits, 16) > _MAX_CODE_POINT:
                raise self.fail("\\u{...} must hold the hex digits of a code point")
            self.pos = end + 1
            cp = int(digits, 16)
        else:
            digits = p[self.pos : self.pos + 4]
            if len(digits) != 4 or not _is_hex(digits):
                raise self.fail("\\u must be followed by four hex digits (or {...})")
            self.pos += 4
            cp = int(digits, 16)
            low = p[self.pos + 2 : self.pos + 6]
            if (
                0xD800 <= cp <= 0xDBFF
                and p.startswith("\\u", self.pos)
                and len(low) == 4
                and _is_hex(low)
                and 0xDC00 <= int(low, 16) <= 0xDFFF
            ):  # a surrogate pair written as two escapes: one code point
                self.pos += 6
                cp = 0x10000 + ((cp - 0xD800) << 10) + (int(low, 16) - 0xDC00)
        if 0xD800 <= cp <= 0xDFFF:
            raise self.fail(f"\\u{cp:04X} is a lone surrogate, which no string holds")
        return cp

    def property(self, *, negated: bool) -> _Set:
        p = self.p
        m = _PROPERTY_NAME.match(p, self.pos + 1) if p.startswith("{", self.pos) else None
        if m is None or not p.startswith("}", m.end()):
            raise self.fail("\\p and \\P must be followed by {name} or {name=value}")
        self.pos = m.end() + 1
        if self.engine != "re2":
            raise self.fail("Unicode property escapes (\\p{...}) need the RE2 engine")
        name, _, value = m.group(0).partition("=")
        if value:
            if name in ("General_Category", "gc"):
                name = value
            elif name in ("Script", "sc"):
                return _Set(properties=(f"\\{'P' if negated else 'p'}{{{value}}}",))
            else:
                raise self.fail(f"the Unicode property {name!r} is not supported")
        if name == "ASCII":
            return _Set(((0, 0x7F),), negated=negated)
        if name == "Any":
            return _Set(((0, _MAX_CODE_POINT),), negated=negated)
        short = _GENERAL_CATEGORIES.get(name, name)
        if short not in _SHORT_CATEGORIES or short == "Cn":
            raise self.fail(
                f"the Unicode property {name!r} is not supported (general categories, "
                "Script=..., ASCII and Any are)"
            )
        if short == "LC":  # RE2 has no LC: Lu, Ll and Lt
            if negated:
                raise self.fail("\\P{LC} (not a cased letter) is not supported")
            return _Set(properties=("\\p{Lu}", "\\p{Ll}", "\\p{Lt}"))
        return _Set(properties=(f"\\{'P' if negated else 'p'}{{{short}}}",))


def _is_hex(text: str) -> bool:
    return all(ch in "0123456789abcdefABCDEF" for ch in text)


def _re2_compile(pattern: str) -> Any:
    assert _re2 is not None
    options = _re2.Options()
    options.log_errors = False
    options.never_capture = True
    return _re2.compile(pattern, options)


def translate_pattern(pattern: str, engine: str = PATTERN_ENGINE) -> str:
    """`pattern` (ECMA-262) in the syntax of `engine` ("re2" or "re") with ECMA-262's meaning;
    `PatternError` for what is not ECMA-262 or what the engine cannot run."""
    if not isinstance(pattern, str):
        raise PatternError(f"a pattern is a string, not {type(pattern).__name__}")
    return _Translator(pattern, engine).translate()


class CompiledPattern:
    """A schema pattern ready to run: `search(text)` is True when it matches somewhere."""

    __slots__ = ("engine", "search", "source")

    def __init__(self, source: str, engine: str) -> None:
        self.source = source
        self.engine = engine
        translated = translate_pattern(source, engine)
        if engine == "re2":
            try:
                compiled = _re2_compile(translated)
            except _re2.error as exc:
                detail = exc.args[0] if exc.args else exc
                if isinstance(detail, bytes):
                    detail = detail.decode("utf-8", "replace")
                raise PatternError(f"pattern {source!r}: RE2 cannot run it: {detail}") from None
            self.search = _re2_searcher(compiled)
        else:
            try:
                rx = re.compile(translated)
            except re.error as exc:
                raise PatternError(f"pattern {source!r}: {exc}") from None
            self.search = lambda text: rx.search(text) is not None

    def __repr__(self) -> str:
        return f"CompiledPattern({self.source!r}, engine={self.engine!r})"


def _re2_searcher(compiled: Any) -> Callable[[str], bool]:
    """RE2's search as a predicate: straight to the C++ `Match` when the binding exposes it
    (1.8 us a call against 7.7 us through the `re`-like wrapper), else through the wrapper."""
    raw = getattr(compiled, "_regexp", None)
    anchor = getattr(getattr(raw, "Anchor", None), "UNANCHORED", None)
    if raw is None or anchor is None or not hasattr(raw, "Match"):  # pragma: no cover
        return lambda text: compiled.search(text) is not None
    match = raw.Match

    def search(text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        return bool(match(anchor, data, 0, len(data))[0][0] >= 0)

    return search


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str, engine: str = PATTERN_ENGINE) -> CompiledPattern:
    """The compiled form of a schema pattern (cached); `PatternError` if it cannot be run."""
    return CompiledPattern(pattern, engine)


@functools.lru_cache(maxsize=1024)
def ecma_pattern(pattern: str) -> str:
    r"""`pattern` for Python's `re` with ECMA-262's meaning (`$` is the end of the input only,
    `\d` ASCII digits, ...: `translate_pattern(pattern, "re")`), for callers that run `re`
    themselves. A pattern `re` cannot express (`\p{...}`) or that is not ECMA-262 gives a
    pattern that never matches, so such a caller falls back to `RecordValidator`, which refuses
    or runs it on RE2."""
    try:
        return translate_pattern(pattern, "re")
    except PatternError:
        return "(?!)"


# keywords whose value is data, not a schema: never searched for patterns
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})


def pattern_issues(schema: Any, path: tuple[Any, ...] = ()) -> list[tuple[str, str]]:
    """(JSON pointer, message) for every `pattern` and `patternProperties` name in `schema`
    that cannot be run; an empty list when all can."""
    issues: list[tuple[str, str]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(schema, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, list):
            stack.extend((item, (*where, i)) for i, item in enumerate(node))
            continue
        if not isinstance(node, Mapping):
            continue
        for key, value in node.items():
            if not isinstance(key, str) or key in _DATA_KEYWORDS or key.startswith("x-"):
                continue
            here = (*where, key)
            if key == "pattern" and isinstance(value, str):
                _try_pattern(value, here, issues)
            elif key == "patternProperties" and isinstance(value, Mapping):
                for name, sub in value.items():
                    _try_pattern(name, (*here, name), issues)
                    stack.append((sub, (*here, name)))
            elif key == "properties" and isinstance(value, Mapping):
                # property names are data; their schemas are not
                stack.extend((sub, (*here, name)) for name, sub in value.items())
            elif isinstance(value, Mapping | list):
                stack.append((value, here))
    return sorted(issues)


def _try_pattern(pattern: str, where: tuple[Any, ...], issues: list[tuple[str, str]]) -> None:
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        issues.append((pointer(*where), str(exc)))


def check_patterns(schema: Any) -> None:
    """Raise `PatternError` listing every pattern of `schema` that cannot be run (naming the
    schema by its `title` when it has one)."""
    issues = pattern_issues(schema)
    if issues:
        title = schema.get("title") if isinstance(schema, Mapping) else None
        named = f"schema {title!r}: " if isinstance(title, str) else ""
        listed = "; ".join(f"{ptr or '/'}: {message}" for ptr, message in issues)
        raise PatternError(f"{named}{len(issues)} pattern(s) cannot be run: {listed}", issues)


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not compile_pattern(patrn).search(instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, patterns: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        search = compile_pattern(patrn).search
        for key, value in instance.items():
            if search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


def _matches_a_pattern(key: str, schema: Any) -> bool:
    return any(compile_pattern(p).search(key) for p in schema.get("patternProperties", {}))


def _additional_properties(
    validator: Any, extra: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """jsonschema's `additionalProperties`, with the patterns run on RE2."""
    if not validator.is_type(instance, "object"):
        return
    declared = schema.get("properties", {})
    extras = {k for k in instance if k not in declared and not _matches_a_pattern(k, schema)}
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            listed = sorted(extras, key=str)
            verb = "was" if len(listed) == 1 else "were"
            yield ValidationError(
                "Additional properties are not allowed "
                f"({', '.join(repr(e) for e in listed)} {verb} unexpected)"
            )


def _evaluated_keys(validator: Any, instance: Any, schema: Any) -> list[Any]:  # noqa: C901
    """jsonschema's `find_evaluated_property_keys_by_schema`, with the patterns run on RE2."""
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[Any] = []
    for keyword in ("$ref", "$dynamicRef"):
        ref = schema.get(keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            keys.extend(
                _evaluated_keys(
                    validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                    instance,
                    resolved.contents,
                )
            )
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys += properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        subschema = schema.get(keyword)
        if subschema is not None:
            keys += (k for k, v in instance.items() if _no_errors(validator.descend(v, subschema)))
    if "patternProperties" in schema:
        keys += (k for k in instance if _matches_a_pattern(k, schema))
    if "dependentSchemas" in schema:
        for name, subschema in schema["dependentSchemas"].items():
            if name in instance:
                keys += _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _no_errors(validator.descend(instance, subschema)):
                keys += _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"])
    return keys


def _no_errors(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _unevaluated_properties(
    validator: Any, unevaluated: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """jsonschema's `unevaluatedProperties`, with the patterns run on RE2."""
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    failing = []
    for key in instance:
        if key not in evaluated:
            for _ in validator.descend(instance[key], unevaluated, path=key, schema_path=key):
                failing.append(key)
    if failing:
        if unevaluated is False:
            listed = sorted(failing, key=str)
            verb = "was" if len(listed) == 1 else "were"
            yield ValidationError(
                "Unevaluated properties are not allowed "
                f"({', '.join(repr(e) for e in listed)} {verb} unexpected)"
            )
        else:
            verb = "was" if len(failing) == 1 else "were"
            yield ValidationError(
                "Unevaluated properties are not valid under the given schema "
                f"({', '.join(repr(e) for e in failing)} {verb} unevaluated and invalid)"
            )


def _multiple_of(validator: Any, dB: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """Exact, on the decimal numbers as written: 0.3 is a multiple of 0.1 (not in float maths)."""
    if not validator.is_type(instance, "number"):
        return
    try:
        failed = (Fraction(repr(instance)) / Fraction(repr(dB))).denominator != 1
    except (ValueError, OverflowError, ZeroDivisionError):  # inf / nan: let jsonschema decide
        yield from Draft202012Validator.VALIDATORS["multipleOf"](validator, dB, instance, schema)
        return
    if failed:
        yield ValidationError(f"{instance!r} is not a multiple of {dB}")


# The reference engine: 2020-12 with ECMA-262 patterns on RE2 and exact `multipleOf`.
_Reference = extend(
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties,
        "multipleOf": _multiple_of,
    },
)


def _error_pointer(err: ValidationError) -> str:
    path = list(err.absolute_path)
    if err.validator == "required" and isinstance(err.validator_value, list):
        missing = [
            r
            for r in err.validator_value
            if isinstance(err.instance, dict) and r not in err.instance
        ]
        if len(missing) == 1 or "'" in err.message:
            for r in missing:
                if repr(r) in err.message:
                    return pointer(*path, r)
    if (
        err.validator == "additionalProperties"
        and isinstance(err.instance, dict)
        and isinstance(err.schema, Mapping)
    ):
        allowed = set(err.schema.get("properties") or {})
        extra = [k for k in err.instance if k not in allowed]
        if len(extra) == 1:
            return pointer(*path, extra[0])
    return pointer(*path)


#: compiled checks by the schema's canonical JSON and the format functions (compiling is ~15% of
#: opening a registry; reopening one, reloading schemas or a test's registry reuses them)
_COMPILED: ContentCache[Any] = ContentCache(1024)


def _placeholder(pattern: str) -> str:
    """What fastjsonschema compiles (with `re`) in place of a pattern: a plain word naming it;
    the compiled check then runs the RE2 pattern stored under that name."""
    return "ecma_" + hashlib.sha256(pattern.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _fast_patterns(schema: Any, found: dict[str, CompiledPattern]) -> Any:
    """A copy of a fast-path schema with every pattern (and `patternProperties` name) replaced
    by its placeholder; `found` collects placeholder -> compiled pattern."""
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "pattern" and isinstance(value, str):
            out[key] = _placeholder(value)
            found[out[key]] = compile_pattern(value)
        elif key == "patternProperties" and isinstance(value, Mapping):
            out[key] = {}
            for name, sub in value.items():
                out[key][_placeholder(name)] = _fast_patterns(sub, found)
                found[_placeholder(name)] = compile_pattern(name)
        elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {k: _fast_patterns(v, found) for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_fast_patterns(v, found) for v in value]
        elif key in _SCHEMA_ONE:
            out[key] = _fast_patterns(value, found)
        else:
            out[key] = value
    return out


def _compiled(
    schema: Mapping[str, Any], formats: Mapping[str, Any], patterns: Mapping[str, CompiledPattern]
) -> Any:
    key = (canonical_key(schema), tuple(sorted(formats.items(), key=lambda kv: kv[0])))

    def build() -> Any:
        check = fastjsonschema.compile(
            dict(schema), formats=dict(formats), use_default=False, use_formats=True
        )
        # fastjsonschema keeps its compiled regexes in the check's globals, by pattern text
        function = getattr(check, "__wrapped__", check)
        regexes = getattr(function, "__globals__", {}).get("REGEX_PATTERNS")
        if not patterns:
            return check
        if not isinstance(regexes, dict) or not set(patterns) <= set(regexes):
            return None  # another fastjsonschema layout: leave patterns to the reference engine
        for name, compiled in patterns.items():
            regexes[name] = compiled  # `.search(text)` is all the compiled code calls
        return check

    return _COMPILED.get(key, build)


class RecordValidator:
    """Validate request bodies and import rows against one entity's JSON Schema."""

    def __init__(
        self,
        schema: Mapping[str, Any],
        *,
        use_fast_path: bool = True,
        formats: Mapping[str, Any] | None = None,
    ):
        """`formats` adds string formats (name -> check) to the built-in ones (plugins do)."""
        self.schema = schema
        all_formats = {**FORMATS, **(formats or {})}
        self._reference = _Reference(schema, format_checker=_format_checker(all_formats))
        self._fast = None
        check_patterns(schema)  # every pattern runs, or the schema is refused now
        if use_fast_path and fast_path_supported(schema, all_formats):
            patterns: dict[str, CompiledPattern] = {}
            fast_schema = dict(_fast_patterns(_strip_x(schema), patterns))
            fast_schema.pop("$schema", None)
            try:
                self._fast = _compiled(fast_schema, all_formats, patterns)
            except fastjsonschema.JsonSchemaDefinitionException:
                self._fast = None  # e.g. a `required` name only a pattern allows: reference only

    @property
    def uses_fast_path(self) -> bool:
        return self._fast is not None

    def is_valid(self, record: Any) -> bool:
        """True when `record` is valid; the fastest check available."""
        if self._fast is not None:
            try:
                self._fast(record)
            except fastjsonschema.JsonSchemaException:
                return False
            return True
        return self._reference.is_valid(record)

    def errors(self, record: Any) -> list[FieldError]:
        """Every failing field of `record`, or an empty list when it is valid."""
        if self.is_valid(record):
            return []
        return self.full_errors(record)

    def full_errors(self, record: Any) -> list[FieldError]:
        """Every failing field, from the reference engine (slow path, for invalid records)."""
        out = []
        seen = set()
        for err in self._reference.iter_errors(record):
            for leaf in _leaves(err):
                fe = FieldError(_error_pointer(leaf), leaf.message, str(leaf.validator))
                if (fe.pointer, fe.message) not in seen:
                    seen.add((fe.pointer, fe.message))
                    out.append(fe)
        out.sort(key=lambda e: e.pointer)
        return out


def _leaves(err: ValidationError) -> list[ValidationError]:
    """For anyOf/oneOf failures report the branch errors that got furthest, not just 'no match'."""
    if err.validator in ("anyOf", "oneOf") and err.context:
        deepest = max(len(e.absolute_path) for e in err.context)
        if deepest > len(err.absolute_path):
            return [e for e in err.context if len(e.absolute_path) == deepest]
    return [err]
