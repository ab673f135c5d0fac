"""Embedded font subsets made once per glyph set, not once per PDF.

fpdf2 embeds a TrueType font as the subset of the glyphs a document drew, made by fontTools'
subsetter when the PDF is written. That costs about 3.5 ms per font whatever the font's size
(most of it fontTools' fixed work over every table), and certificate pages draw nearly the same
glyphs every time: the template's labels, digits, and names in a few alphabets.

So the subsets of the fonts the certificate renderer marks (`mark`) are remembered for the
process, by (font file, modification time, the set of glyph names, the subsetter's options): a
page whose glyphs were subset before gets the stored subset, loaded lazily so that writing it
copies its bytes. The PDF is the same, byte for byte, as one whose font fontTools subset again.

To make pages share a glyph set, a marked font's subset is padded (`PaddedSubsetMap`): it holds
the glyphs of printable ASCII and the Latin-1 letters besides those drawn (about 6 kB more in a
Hindi page of 25 kB), so names in Latin letters do not make a new subset each. Names in other
scripts (a Devanagari name's conjuncts) still do, once per glyph set.

The hook: fpdf2 reaches fontTools through its `fpdf.output.ftsubset` module attribute; `install`
replaces it with a stand-in whose `Subsetter` keeps fpdf2's calls as they were for every font
it was not given by this module (`mark`), so other fpdf2 documents in the process are subset as
before. fpdf2 versions without that attribute are left alone (subsets made every time).
"""

from __future__ import annotations

import io
import threading
import types
from collections.abc import Sequence
from typing import Any

from fontTools import subset as ftsubset
from fontTools import ttLib
from fpdf.fonts import SubsetMap, TTFFont

#: subsets kept per process (each is the font's file for one glyph set, some kB)
MAX_SUBSETS = 256
#: code points whose glyphs every marked font's subset holds (when the font has them)
PADDING = tuple(range(0x20, 0x7F)) + tuple(range(0xC0, 0x100))

#: (font file, mtime, glyph names, options) -> (the subset's bytes, its glyph order)
_subsets: dict[tuple[Any, ...], tuple[bytes, list[str]]] = {}
_lock = threading.Lock()
#: what this module counts: subsets made by fontTools, and those taken from `_subsets`
counts = {"made": 0, "reused": 0}


class PaddedSubsetMap(SubsetMap):
    """fpdf2's glyph subset of a font, whose embedded subset also holds the font's glyphs of
    `PADDING` (the codes drawn are fpdf2's own: padding adds glyphs, never moves one)."""

    def get_all_glyph_names(self) -> Sequence[str]:
        drawn = list(super().get_all_glyph_names())
        cmap = self.font.cmap
        padding = (cmap[code] for code in PADDING if code in cmap)
        return list(dict.fromkeys([*drawn, *padding]))


def mark(font: TTFFont, path: str, mtime: int) -> None:
    """Have `font`'s subset remembered (and padded), under its file and modification time."""
    font.subset = PaddedSubsetMap(font)
    font.ttfont._registry_subset_of = (path, mtime)


def _options_key(options: Any) -> tuple[Any, ...]:
    return tuple(sorted((name, repr(value)) for name, value in vars(options).items()))


class _Subsetter:
    """fontTools' `Subsetter` as fpdf2 calls it (`populate(glyphs=...)`, then `subset(font)`),
    which takes a marked font's subset from `_subsets` when it was made before."""

    def __init__(self, options: Any = None, **more: Any) -> None:
        self._real = ftsubset.Subsetter(options, **more)
        self._options = options
        self._glyphs: frozenset[str] | None = None

    def populate(self, glyphs: Any = (), **more: Any) -> None:
        self._glyphs = None if more else frozenset(glyphs)
        self._real.populate(glyphs=glyphs, **more)

    def subset(self, font: ttLib.TTFont) -> None:
        of = getattr(font, "_registry_subset_of", None)
        if of is None or self._glyphs is None:
            self._real.subset(font)
            return
        key = (*of, self._glyphs, _options_key(self._options))
        stored = _subsets.get(key)
        if stored is None:
            self._real.subset(font)
            if type(font) is ttLib.TTFont:  # stored when fpdf2 writes it (`_NewSubset.save`)
                font._registry_store_as = key
                font.__class__ = _NewSubset
            return
        with _lock:
            counts["reused"] += 1
        made = _StoredSubset(stored[0])
        made.setGlyphOrder(list(stored[1]))  # the names fpdf2 looks glyphs up by
        font.close()  # the font file fpdf2 opened, when it read the font itself
        vars(font).clear()
        vars(font).update(vars(made))
        font.__class__ = _StoredSubset

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _store(key: tuple[Any, ...], data: bytes, glyph_order: list[str]) -> None:
    with _lock:
        counts["made"] += 1
        if len(_subsets) >= MAX_SUBSETS:
            _subsets.clear()
        _subsets[key] = (data, glyph_order)


class _NewSubset(ttLib.TTFont):
    """A subset fontTools just made: the bytes fpdf2 writes are stored too (under
    `_registry_store_as`)."""

    def save(self, file: Any, reorderTables: bool | None = True) -> None:
        data = io.BytesIO()
        super().save(data, reorderTables)
        _store(self._registry_store_as, data.getvalue(), list(self.getGlyphOrder()))
        file.write(data.getvalue())


class _StoredSubset(ttLib.TTFont):
    """A subset made before: its glyph order as fontTools made it, and its file's bytes, which
    `save` writes as they are (fontTools would read and write every table again)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), lazy=True, recalcTimestamp=False)
        self.recalcBBoxes = False
        self._registry_bytes = data

    def save(self, file: Any, reorderTables: bool | None = True) -> None:
        file.write(self._registry_bytes)


def install() -> bool:
    """Put the stand-in where fpdf2 looks for fontTools' subsetter; False (and nothing done)
    when this fpdf2 does not look for it there."""
    import fpdf.output

    found = getattr(fpdf.output, "ftsubset", None)
    if found is None or not hasattr(found, "Subsetter"):
        return False
    if getattr(found, "_registry_stand_in", False):
        return True
    fpdf.output.ftsubset = _StandIn("open_registry.font_subsets.ftsubset")
    return True


class _StandIn(types.ModuleType):
    """fontTools' subset module with `_Subsetter` for its `Subsetter`."""

    Subsetter = _Subsetter
    _registry_stand_in = True

    def __getattr__(self, name: str) -> Any:
        return getattr(ftsubset, name)


def clear() -> None:
    """Forget every remembered subset (tests; a font file replaced is a new key anyway)."""
    with _lock:
        _subsets.clear()
