"""Embedded font subsets made here, in well under a millisecond, and kept per glyph set.

fpdf2 embeds a TrueType font as the subset of the glyphs a document drew, made by fontTools'
subsetter when the PDF is written. That cost 6-9 ms per page for a Hindi certificate (most of
it fontTools' fixed work over every table, and writing the result), a third of the page.

For the fonts the certificate renderer marks (`mark`), the subset is made by `GlyfFont`
instead: the font file is read once per process; a subset keeps every glyph's id and advance
and the outlines of the glyphs drawn (and of the glyphs composite ones are made of), and copies
the tables PDF viewers use as they are (about 0.4 ms). Keeping the glyph ids means the page's
CIDToGIDMap names the font's own ids; the glyphs left out have no outline. Subsets are also
kept by (font file, modification time, the set of glyph names): a page whose glyphs were
subset before writes the stored bytes. Fonts of another kind (CFF outlines) are subset by
fontTools, as fpdf2 would. Tests compare, glyph code by glyph code, the outline each page draws
with what fontTools' subset draws.

The hook: fpdf2 reaches fontTools through its `fpdf.output.ftsubset` module attribute; `install`
replaces it with a stand-in whose `Subsetter` keeps fpdf2's calls as they were for every font
it was not given by this module (`mark`), so other fpdf2 documents in the process are subset as
before. fpdf2 versions without that attribute are left alone (fontTools subsets every page).
"""

from __future__ import annotations

import io
import struct
import threading
import types
from pathlib import Path
from typing import Any

from fontTools import subset as ftsubset
from fontTools import ttLib
from fpdf.fonts import TTFFont

#: subsets kept per process (each is the font's file for one glyph set, some kB)
MAX_SUBSETS = 256
#: font files kept read for subsetting (`GlyfFont`)
MAX_FONTS = 32

#: (font file, mtime, glyph names) -> (the subset's bytes, its glyph order)
_subsets: dict[tuple[Any, ...], tuple[bytes, list[str]]] = {}
_lock = threading.Lock()
#: what this module counts: subsets made (`GlyfFont`), and those taken from `_subsets`
counts = {"made": 0, "reused": 0}


def mark(font: TTFFont, path: str, mtime: int) -> None:
    """Have `font`'s subsets made here (`GlyfFont`) and remembered, under its file and
    modification time."""
    font.ttfont._registry_subset_of = (path, mtime)


#: font files read for subsetting, by (path, modification time); None: not a glyf font
_glyf_fonts: dict[tuple[str, int], GlyfFont | None] = {}


def _glyf_font(path: str, mtime: int) -> GlyfFont | None:
    key = (path, mtime)
    if key not in _glyf_fonts:
        try:
            found: GlyfFont | None = GlyfFont(Path(path).read_bytes())
        except (OSError, ValueError, ttLib.TTLibError, struct.error):
            found = None  # fontTools subsets it, as fpdf2 would
        with _lock:
            if len(_glyf_fonts) >= MAX_FONTS:
                _glyf_fonts.clear()
            _glyf_fonts[key] = found
    return _glyf_fonts[key]


class _Subsetter:
    """fontTools' `Subsetter` as fpdf2 calls it (`populate(glyphs=...)`, then `subset(font)`):
    a marked glyf font's subset is taken from `_subsets`, else made by `GlyfFont` and kept;
    any other font is subset by fontTools."""

    def __init__(self, options: Any = None, **more: Any) -> None:
        self._real = ftsubset.Subsetter(options, **more)
        self._glyphs: frozenset[str] | None = None

    def populate(self, glyphs: Any = (), **more: Any) -> None:
        self._glyphs = None if more else frozenset(glyphs)
        self._real.populate(glyphs=glyphs, **more)

    def subset(self, font: ttLib.TTFont) -> None:
        of = getattr(font, "_registry_subset_of", None)
        if of is None or self._glyphs is None:
            self._real.subset(font)
            return
        key = (*of, self._glyphs)
        stored = _subsets.get(key)
        if stored is None:
            glyf = _glyf_font(*of)
            if glyf is None:
                self._real.subset(font)
                return
            stored = (glyf.subset(self._glyphs), glyf.order)
            _store(key, stored[0], stored[1])
        else:
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


#: tables a subset keeps as they are (besides `head`, `loca`, `glyf`, `post`, written anew); the
#: rest (OpenType layout, kerning, device metrics, signatures) PDF viewers do not use
_KEPT = ("OS/2", "cmap", "cvt ", "fpgm", "gasp", "hhea", "hmtx", "maxp", "name", "prep")
#: composite glyph component flags (TrueType `glyf`)
_WORDS, _SCALE, _XY_SCALE, _TWO_BY_TWO, _MORE = 0x0001, 0x0008, 0x0040, 0x0080, 0x0020


class GlyfFont:
    """A TrueType font with outlines in `glyf`, read once: its tables' bytes, its glyphs'
    offsets and its glyph names' ids. `subset` writes the font with only some glyphs' outlines
    in a few hundred microseconds, where fontTools' subsetter takes several milliseconds."""

    def __init__(self, data: bytes):
        font = ttLib.TTFont(io.BytesIO(data), lazy=True)
        self.tables = {tag: font.reader[tag] for tag in font.reader.tables}
        if "glyf" not in self.tables or "loca" not in self.tables or "CFF " in self.tables:
            raise ValueError("not a TrueType font with glyf outlines")
        self.order = list(font.getGlyphOrder())
        self.ids = {name: gid for gid, name in enumerate(self.order)}
        head = self.tables["head"]
        n = len(self.order) + 1
        loca = self.tables["loca"]
        if struct.unpack(">h", head[50:52])[0] == 0:  # short offsets: words
            self.offsets = [2 * o for o in struct.unpack(f">{n}H", loca[: 2 * n])]
        else:
            self.offsets = list(struct.unpack(f">{n}I", loca[: 4 * n]))

    def outline(self, gid: int) -> bytes:
        return self.tables["glyf"][self.offsets[gid] : self.offsets[gid + 1]]

    def components(self, gid: int) -> list[int]:
        """The glyphs a composite glyph is made of (none for a simple or empty one)."""
        data = self.outline(gid)
        if len(data) < 10 or struct.unpack(">h", data[:2])[0] >= 0:
            return []
        found, at, flags = [], 10, _MORE
        while flags & _MORE and at + 4 <= len(data):
            flags, part = struct.unpack(">HH", data[at : at + 4])
            found.append(part)
            at += 4 + (4 if flags & _WORDS else 2)
            if flags & _SCALE:
                at += 2
            elif flags & _XY_SCALE:
                at += 4
            elif flags & _TWO_BY_TWO:
                at += 8
        return found

    def subset(self, names: Any) -> bytes:
        """The font file with the outlines of the glyphs `names` (and of `.notdef`, and of the
        glyphs composites are made of); every other glyph keeps its id and advance, with no
        outline. Glyph ids are the font's own (a PDF's CIDToGIDMap names them)."""
        todo = [0, *(self.ids[n] for n in names if n in self.ids)]
        kept: set[int] = set()
        while todo:
            gid = todo.pop()
            if gid not in kept and gid < len(self.order):
                kept.add(gid)
                todo.extend(self.components(gid))
        glyf, offsets = bytearray(), []
        for gid in range(len(self.order)):
            offsets.append(len(glyf))
            if gid in kept:
                glyf += self.outline(gid)
                glyf += bytes(-len(glyf) % 4)
        offsets.append(len(glyf))
        head = bytearray(self.tables["head"])
        head[8:12] = bytes(4)  # checkSumAdjustment, set below
        head[50:52] = struct.pack(">h", 1)  # long offsets in loca
        post = bytearray(self.tables["post"][:32])
        post[0:4] = struct.pack(">I", 0x00030000)  # version 3: no glyph names
        tables = {tag: self.tables[tag] for tag in _KEPT if tag in self.tables}
        tables.update(
            head=bytes(head),
            loca=struct.pack(f">{len(offsets)}I", *offsets),
            glyf=bytes(glyf),
            post=bytes(post),
        )
        return _sfnt(tables)


def _checksum(data: bytes) -> int:
    data += bytes(-len(data) % 4)
    return sum(struct.unpack(f">{len(data) // 4}I", data)) & 0xFFFFFFFF


def _sfnt(tables: dict[str, bytes]) -> bytes:
    """A TrueType font file of `tables` (tag -> bytes), tables in tag order, 4-byte aligned,
    with their checksums and the `head` table's whole-file adjustment."""
    tags = sorted(tables)
    n = len(tags)
    power = 1 << (n.bit_length() - 1)
    out = bytearray(struct.pack(">IHHHH", 0x00010000, n, power * 16, power.bit_length() - 1,
                                n * 16 - power * 16))  # fmt: skip
    at = len(out) + 16 * n
    body = bytearray()
    for tag in tags:
        data = tables[tag]
        out += struct.pack(">4sIII", tag.encode("latin-1"), _checksum(data), at + len(body),
                           len(data))  # fmt: skip
        body += data + bytes(-len(data) % 4)
    out += body
    adjustment = (0xB1B0AFBA - _checksum(bytes(out))) & 0xFFFFFFFF
    record = 12 + 16 * tags.index("head")  # the head table's record: tag, checksum, offset
    head_at = struct.unpack(">I", out[record + 8 : record + 12])[0]
    out[head_at + 8 : head_at + 12] = struct.pack(">I", adjustment)
    return bytes(out)


def _store(key: tuple[Any, ...], data: bytes, glyph_order: list[str]) -> None:
    with _lock:
        counts["made"] += 1
        if len(_subsets) >= MAX_SUBSETS:
            _subsets.clear()
        _subsets[key] = (data, glyph_order)


class _StoredSubset(ttLib.TTFont):
    """A subset (`GlyfFont.subset`) as fpdf2 uses it: the font's glyph order, by which fpdf2
    looks up the ids of the glyphs drawn, and its file's bytes, which `save` writes as they
    are."""

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
