"""Embedded font subsets made by the plugin (`font_subsets.GlyfFont`, kept per glyph set) and
shaped texts kept across pages (`pdf._ShapedWidths`). Subsets are checked against fontTools'
(fpdf2's own path) glyph code by glyph code, shapes byte for byte; both are counted, so a
change that makes them again on every page fails."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fpdf.output
import pypdf
import pytest
from fontTools import subset as ftsubset
from fpdf import FPDF
from fpdf.fonts import TTFFont

from open_registry.plugins.certificates import font_subsets, pdf, qr
from tests.plugins.certificates.test_pdf import LOHIT, needs_lohit

pytestmark = needs_lohit
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
#: Latin names, a Devanagari name with conjuncts, a right-to-left name (fallback font)
NAMES = ["Bhaya Mitra", "Zoë Dupont", "क्षितिज श्रीवास्तव", "أحمد 12 Mitra"]


def pages(signed: dict[str, Any], names: list[str], locale: str = "hi") -> list[bytes]:
    png = qr.qr_png(qr.compact_payload(signed))
    fonts = {"default": LOHIT, "ar": DEJAVU}
    made = []
    for name in names:
        doc = {**signed, "credentialSubject": {**signed["credentialSubject"], "name": name}}
        made.append(pdf.render_pdf(doc, locale=locale, qr_png=png, fonts=fonts))
    return made


def content_streams(data: bytes) -> list[bytes]:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return [page.get_contents().get_data() for page in reader.pages]  # type: ignore[union-attr]


@pytest.fixture(autouse=True)
def forget() -> None:
    font_subsets.clear()
    pdf._shaped_widths.clear()


def test_the_stand_in_is_where_fpdf2_looks_for_the_subsetter() -> None:
    assert pdf._SUBSETS_SHARED
    assert fpdf.output.ftsubset.Subsetter is font_subsets._Subsetter  # type: ignore[attr-defined]
    assert fpdf.output.ftsubset.Options is ftsubset.Options  # type: ignore[attr-defined]


def test_a_stored_subset_is_the_subset_made_again(
    signed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page whose glyphs were subset before reuses that subset; the pages are the same bytes
    when every subset is made again."""
    before = dict(font_subsets.counts)
    stored = pages(signed, [NAMES[0], NAMES[1], NAMES[0]])
    made = font_subsets.counts["made"] - before["made"]
    reused = font_subsets.counts["reused"] - before["reused"]
    assert (made, reused) == (2, 1)  # one main font per page, two glyph sets
    font_subsets.clear()
    assert pages(signed, [NAMES[0], NAMES[1], NAMES[0]]) == stored


@pytest.mark.parametrize("name", NAMES)
def test_the_embedded_font_draws_what_fonttools_subset_draws(
    name: str, signed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page drawn with a subset made here (`GlyfFont`: glyph ids kept, unused outlines
    left out) draws, for every glyph code on the page, the outline fontTools' subset (fpdf2's
    own path) draws; the content streams, widths and text are the same."""
    ours = pages(signed, [name])[0]
    monkeypatch.setattr(fpdf.output, "ftsubset", ftsubset)
    theirs = pages(signed, [name])[0]
    assert ours != theirs  # different font programs
    assert content_streams(ours) == content_streams(theirs)
    reader = [pypdf.PdfReader(io.BytesIO(d)) for d in (ours, theirs)]
    assert reader[0].pages[0].extract_text() == reader[1].pages[0].extract_text()
    fonts = [embedded_fonts(r) for r in reader]
    assert fonts[0].keys() == fonts[1].keys()
    for key in fonts[0]:
        (our_font, our_map, our_widths), (their_font, their_map, their_widths) = (
            fonts[0][key],
            fonts[1][key],
        )
        assert our_widths == their_widths
        assert len(our_map) == len(their_map)
        codes = [c for c in range(len(our_map)) if our_map[c] or their_map[c]]  # those drawn
        assert codes
        for code in codes:
            assert outline(our_font, our_map[code]) == outline(their_font, their_map[code]), code


def embedded_fonts(reader: pypdf.PdfReader) -> dict[str, tuple[Any, list[int], Any]]:
    """Each embedded TrueType font of the page, by resource name: (the font, read by fontTools;
    its CIDToGIDMap; its widths)."""
    from fontTools import ttLib

    found = {}
    for key, ref in reader.pages[0]["/Resources"]["/Font"].items():
        font = ref.get_object()
        if font.get("/Subtype") != "/Type0":
            continue
        cid = font["/DescendantFonts"][0].get_object()
        program = cid["/FontDescriptor"]["/FontFile2"].get_object().get_data()
        gid_map = cid["/CIDToGIDMap"].get_object().get_data()
        gids = [int.from_bytes(gid_map[i : i + 2], "big") for i in range(0, len(gid_map), 2)]
        found[key] = (ttLib.TTFont(io.BytesIO(program)), gids, cid.get("/W"))
    return found


def outline(font: Any, gid: int) -> list[Any]:
    from fontTools.pens.recordingPen import DecomposingRecordingPen

    glyphs = font.__dict__.setdefault("_test_glyph_set", font.getGlyphSet())
    pen = DecomposingRecordingPen(glyphs)
    glyphs[font.getGlyphOrder()[gid]].draw(pen)
    return pen.value


def test_a_glyf_subset_keeps_ids_components_and_checksums() -> None:
    """`GlyfFont.subset`: glyph ids and advances as in the font, the outlines of the glyphs
    asked for and of the glyphs composites are made of (DejaVu's é is `e` and an accent),
    none for the others; fontTools reads it with its checksums checked."""
    from fontTools import ttLib

    data = DEJAVU.read_bytes()
    original = ttLib.TTFont(io.BytesIO(data))
    program = font_subsets.GlyfFont(data).subset(["eacute"])
    made = ttLib.TTFont(io.BytesIO(program), checkChecksums=2)
    for tag in made.reader.tables:
        made[tag]  # every table reads, checksums hold
    order = original.getGlyphOrder()
    assert len(made.getGlyphOrder()) == len(order)
    ids = [order.index(n) for n in ("eacute", "e", "acutecomb")]
    assert outline(made, ids[0]) == outline(original, ids[0])
    assert original["glyf"]["eacute"].isComposite()
    drawn = {gid for gid in range(len(order)) if outline(made, gid)}
    assert drawn >= set(ids[:2]) and len(drawn) <= 4  # é, its parts (and .notdef)
    assert made["hmtx"].metrics[made.getGlyphOrder()[ids[0]]] == original["hmtx"]["eacute"]


def test_remembered_shapes_draw_what_fpdf2_shapes_draw(
    signed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each text drawn is shaped once per process (`_ShapedWidths.shape_text`): the pages, the
    first made and those from remembered shapes, are the same bytes as with fpdf2 shaping
    every text of every page."""
    ours = pages(signed, NAMES + NAMES)
    remembered = pdf._shaped_widths[str(LOHIT)][2]
    assert remembered  # the texts were kept
    shaped: list[str] = []
    real = TTFFont.perform_harfbuzz_shaping

    def counted(self: Any, text: str, *more: Any) -> Any:
        shaped.append(text)
        return real(self, text, *more)

    monkeypatch.setattr(TTFFont, "perform_harfbuzz_shaping", counted)
    assert pages(signed, NAMES) == ours[: len(NAMES)]
    assert shaped == []  # every width and every shape was remembered

    monkeypatch.setattr(pdf._ShapedWidths, "shape_text", TTFFont.shape_text)
    assert pages(signed, NAMES) == ours[: len(NAMES)]
    assert shaped  # fpdf2 shaped them again

    # and with every width worked out by fpdf2 each time it is asked for (line breaking)
    monkeypatch.setattr(pdf._ShapedWidths, "get_text_width", TTFFont.get_text_width)
    monkeypatch.setattr(pdf._ShapedWidths, "shaped_text_width", TTFFont.shaped_text_width)
    assert pages(signed, NAMES) == ours[: len(NAMES)]


def test_other_fpdf2_documents_are_subset_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """A document the certificate renderer did not make (its fonts are not marked) is subset
    by fontTools each time, as without the stand-in."""

    def document() -> bytes:
        doc = FPDF()
        # a fixed date: two documents made a second apart would differ in it
        doc.set_creation_date(datetime(2021, 9, 17, tzinfo=UTC))
        doc.add_font("lohit", "", str(LOHIT))
        doc.add_page()
        doc.set_font("lohit", size=14)
        doc.cell(text="टीकाकरण प्रमाणपत्र Bhaya")
        return bytes(doc.output())

    before = dict(font_subsets.counts)
    ours = document()
    assert font_subsets.counts == before
    monkeypatch.setattr(fpdf.output, "ftsubset", ftsubset)
    assert document() == ours
