"""What the certificate PDFs remember across pages: embedded font subsets made once per glyph
set (`font_subsets`) and shaped texts (`pdf._ShapedWidths`). Each is checked against fpdf2's
own path, byte for byte, and counted, so a change that makes them again on every page fails."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import fpdf.output
import pypdf
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fontTools import subset as ftsubset
from fpdf import FPDF
from fpdf.fonts import SubsetMap, TTFFont

from open_registry.plugins.certificates import font_subsets, keys, pdf, qr, suites
from tests.plugins.certificates.test_pdf import LOHIT, needs_lohit

pytestmark = needs_lohit
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
#: Latin names, a Devanagari name with conjuncts, a right-to-left name (fallback font)
NAMES = ["Bhaya Mitra", "Zoë Dupont", "क्षितिज श्रीवास्तव", "أحمد 12 Mitra"]


@pytest.fixture
def signed(credential: dict[str, Any], issuer_key: Ed25519PrivateKey) -> dict[str, Any]:
    method = keys.did_key_method(issuer_key.public_key())
    return suites.sign(credential, issuer_key, method)


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


def test_a_stored_subset_is_the_subset_fonttools_makes_again(
    signed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Latin names share one subset (padded with printable ASCII): the second page reuses the
    first's; every page is the same bytes as when each subset is made again."""
    before = dict(font_subsets.counts)
    stored = pages(signed, [NAMES[0], NAMES[1], NAMES[0]])
    made = font_subsets.counts["made"] - before["made"]
    reused = font_subsets.counts["reused"] - before["reused"]
    assert (made, reused) == (1, 2)  # one main font per page, one glyph set for three pages

    monkeypatch.setattr(fpdf.output, "ftsubset", ftsubset)  # fontTools for every page
    assert pages(signed, [NAMES[0], NAMES[1], NAMES[0]]) == stored


@pytest.mark.parametrize("name", NAMES[2:])
def test_other_scripts_make_their_own_subset_once(
    name: str, signed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name whose glyphs the padding lacks (conjuncts, another font) makes a subset of its
    own, stored too, and the same bytes as fontTools makes."""
    stored = pages(signed, [NAMES[0], name, name])
    assert stored[1] == stored[2]
    monkeypatch.setattr(fpdf.output, "ftsubset", ftsubset)
    assert pages(signed, [NAMES[0], name, name]) == stored


def test_padding_adds_glyphs_and_moves_nothing_drawn(
    signed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The padded subset holds more glyphs; the page's drawing (its content stream, the codes
    of the glyphs drawn) is the same as without padding."""
    padded = pages(signed, [NAMES[0]])[0]
    font_subsets.clear()
    monkeypatch.setattr(
        font_subsets.PaddedSubsetMap, "get_all_glyph_names", SubsetMap.get_all_glyph_names
    )
    plain = pages(signed, [NAMES[0]])[0]
    assert content_streams(padded) == content_streams(plain)
    assert len(padded) > len(plain)


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


def test_other_fpdf2_documents_are_subset_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """A document the certificate renderer did not make (its fonts are not marked) is subset
    by fontTools each time, as without the stand-in."""

    def document() -> bytes:
        doc = FPDF()
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
