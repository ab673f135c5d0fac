"""Certificate PDFs: real PDFs parsed back with pypdf (text and the embedded QR picture, read by
zxing-cpp), in English, French and Hindi, with template overrides and every refusal."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pypdf
import pytest

from open_registry.plugins.certificates import pdf, qr
from tests.plugins.certificates.conftest import DIVOC, read_json

LOHIT = Path("/usr/share/fonts/truetype/lohit-devanagari/Lohit-Devanagari.ttf")
needs_lohit = pytest.mark.skipif(
    not LOHIT.is_file(), reason="fonts-lohit-deva is not installed (CI installs it)"
)


def read_pdf(data: bytes) -> pypdf.PdfReader:
    assert data.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 1
    return reader


def page_text(data: bytes) -> str:
    return read_pdf(data).pages[0].extract_text()


def embedded_qr_payload(data: bytes) -> bytes:
    """The payload of the QR picture embedded in the PDF, read back by zxing-cpp."""
    images = read_pdf(data).pages[0].images
    assert len(images) == 1
    png = io.BytesIO()
    images[0].image.save(png, "PNG")
    return qr.decode_image(png.getvalue())


def font_names(data: bytes) -> set[str]:
    fonts = read_pdf(data).pages[0]["/Resources"]["/Font"]
    return {str(font.get_object()["/BaseFont"]) for font in fonts.values()}


# -- content --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "title", "dose"),
    [("en", "Vaccination Certificate", "1 of 2"), ("fr", "Certificat de vaccination", "1 sur 2")],
)
def test_latin_locales_show_the_certificate(
    locale: str, title: str, dose: str, signed: dict[str, Any]
) -> None:
    payload = qr.compact_payload(signed)
    data = pdf.render_pdf(signed, locale=locale, qr_png=qr.qr_png(payload, scale=2))
    text = page_text(data)
    for shown in (title, "Bhaya Mitra", "9001", dose, "CoVax", "MB3428BX", "2024-03-01"):
        assert shown in text
    assert "ABC Medical Center" in text
    assert "XXXXXXXXt-42" in text and "recipient-42" not in text  # identity masked
    # Latin-1 only: the PDF's built-in Helvetica, no font embedded
    assert font_names(data) <= {"/Helvetica", "/Helvetica-Bold"}
    assert embedded_qr_payload(data) == payload
    assert qr.decode_payload(embedded_qr_payload(data)) == signed


@needs_lohit
def test_hindi_uses_a_devanagari_font_with_shaping(signed: dict[str, Any]) -> None:
    data = pdf.render_pdf(signed, locale="hi", qr_png=qr.qr_png(qr.divoc_payload(signed)))
    text = page_text(data)
    for shown in ("टीकाकरण प्रमाणपत्र", "Bhaya Mitra", "9001", "2 में से 1", "XXXXXXXXt-42"):
        assert shown in text
    assert any("Lohit" in name for name in font_names(data))
    assert qr.decode_payload(embedded_qr_payload(data)) == signed


@needs_lohit
def test_devanagari_name_in_an_english_certificate(signed: dict[str, Any]) -> None:
    signed["credentialSubject"]["name"] = "भया मित्र"
    data = pdf.render_pdf(signed, locale="en", fonts={"default": LOHIT})
    text = page_text(data)
    # pypdf reads a shaped "ि" (drawn before its consonant) out of order, so look at the rest
    assert "Name भया" in text and "त्र" in text
    assert any("Lohit" in name for name in font_names(data))


def test_default_qr_is_the_divoc_payload(signed: dict[str, Any]) -> None:
    data = pdf.render_pdf(signed)
    assert embedded_qr_payload(data) == qr.divoc_payload(signed)


def test_default_qr_falls_back_to_compact_when_the_zip_does_not_fit() -> None:
    sample = read_json(DIVOC / "rsa-signed-sample.extracted.json")  # its ZIP is over v25
    data = pdf.render_pdf(sample)
    assert embedded_qr_payload(data) == qr.compact_payload(sample)


@pytest.mark.parametrize(
    "sample", ["ed25519-signed-sample.extracted.json", "rsa-signed-sample.extracted.json"]
)
def test_divoc_certificates_render(sample: str) -> None:
    certificate = read_json(DIVOC / sample)
    text = page_text(pdf.render_pdf(certificate, locale="fr"))
    assert "Bhaya Mitra" in text and "XXXXXX3334" in text and "2020-12-02" in text
    assert "2342343334" not in text


def test_markup_in_data_is_text_not_html(signed: dict[str, Any]) -> None:
    signed["credentialSubject"]["name"] = "Eve <img src='/etc/passwd'> & <b>Co</b>"
    text = page_text(pdf.render_pdf(signed))
    assert "Eve <img src='/etc/passwd'> & <b>Co</b>" in text


def test_output_is_deterministic(signed: dict[str, Any]) -> None:
    png = qr.qr_png(qr.compact_payload(signed))
    assert pdf.render_pdf(signed, qr_png=png) == pdf.render_pdf(signed, qr_png=png)


@needs_lohit
@pytest.mark.parametrize("name", ["Bhaya Mitra", "भया मित्र", "أحمد 12 Mitra", "Zoë ٣ Dupont"])
def test_the_left_to_right_shortcut_draws_what_fpdf2s_own_algorithm_draws(
    name: str, signed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shaped pages skip fpdf2's bidirectional algorithm for left-to-right text
    (`pdf._Document`): the PDF is the same, byte for byte, as with the algorithm run on every
    text; names with right-to-left letters or Arabic digits go through it as before."""
    signed["credentialSubject"]["name"] = name
    fonts = {"default": LOHIT, "ar": Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")}
    png = qr.qr_png(qr.compact_payload(signed))
    ours = [pdf.render_pdf(signed, locale=loc, qr_png=png, fonts=fonts) for loc in ("hi", "en")]
    runs: list[str] = []
    real = pdf.FPDF._preload_bidirectional_text

    def algorithm(self: Any, text: str, markdown: bool, *more: Any) -> Any:
        runs.append(text)
        return real(self, text, markdown, *more)

    monkeypatch.setattr(pdf._Document, "_preload_bidirectional_text", algorithm)
    theirs = [pdf.render_pdf(signed, locale=loc, qr_png=png, fonts=fonts) for loc in ("hi", "en")]
    assert runs and ours == theirs


@needs_lohit
def test_a_font_read_once_draws_what_a_font_read_for_each_page_draws(
    signed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each page gets a copy of the font as fpdf2 read it once (`pdf._read_font`): its pages
    are the same bytes as pages whose font fpdf2 reads again, however many were made before
    (a copy's glyph subset is its own)."""
    png = qr.qr_png(qr.compact_payload(signed))
    other = {**signed, "credentialSubject": {**signed["credentialSubject"], "name": "ज़ोया"}}
    copies = [pdf.render_pdf(doc, locale="hi", qr_png=png) for doc in (signed, other, signed)]
    assert pdf._read_fonts  # read once, kept
    monkeypatch.setattr(pdf, "_read_font", lambda *args: None)
    read_each_time = [pdf.render_pdf(doc, locale="hi", qr_png=png) for doc in (signed, other)]
    assert copies == [*read_each_time, read_each_time[0]]


def test_left_to_right_texts() -> None:
    assert pdf.left_to_right("टीकाकरण प्रमाणपत्र 2 में से 1 (MB3428BX), 2024-03-01")
    assert pdf.left_to_right("")
    assert not pdf.left_to_right("Name أحمد")  # Arabic letters
    assert not pdf.left_to_right("dose ٣")  # an Arabic-Indic digit
    assert not pdf.left_to_right("a\u202bb")  # an explicit embedding


@pytest.mark.parametrize(
    ("identity", "masked"),
    [
        ("did:in.gov.uidai.aadhaar:234234233334", "XXXXXXXX3334"),
        ("A1234567", "XXXX4567"),
        ("1234", "XXXX"),
        ("12", "XX"),
    ],
)
def test_identity_is_masked_except_the_last_four(identity: str, masked: str) -> None:
    assert pdf.mask_identity(identity) == masked


def test_label_catalogs_have_the_same_keys() -> None:
    catalogs = {p.stem: json.loads(p.read_text("utf-8")) for p in pdf.LOCALES.glob("*.json")}
    assert set(catalogs) >= {"en", "fr", "hi"}
    for name, catalog in catalogs.items():
        assert set(catalog) == set(catalogs["en"]), name
        assert "{dose}" in catalog["dose_of"] and "{total}" in catalog["dose_of"], name


def test_region_locale_uses_the_language_catalog() -> None:
    assert pdf.PdfRenderer().labels("fr-CA")["title"] == "Certificat de vaccination"


# -- overrides ------------------------------------------------------------------------------------


def test_template_text_override(signed: dict[str, Any]) -> None:
    template = (
        "<h2>{{ labels.title }} / Ministry of Health</h2><p>Holder: {{ cert.name }} "
        "({{ credential.credentialSubject.nationality }})</p>"
        '<table><tr><td>QR</td><td><img src="{{ qr }}"></td></tr></table>'
    )
    data = pdf.render_pdf(signed, template=template)
    text = page_text(data)
    assert "Vaccination Certificate / Ministry of Health" in text
    assert "Holder: Bhaya Mitra (Indian)" in text
    assert "Issued by" not in text
    assert qr.decode_payload(embedded_qr_payload(data)) == signed  # the QR inside a table cell


def test_template_file_override_is_reloaded_when_edited(
    signed: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "certificate.html"
    path.write_text("<p>First edition {{ cert.certificate_id }}</p>", encoding="utf-8")
    assert "First edition 9001" in page_text(pdf.render_pdf(signed, template_path=path))
    path.write_text("<p>Second edition {{ cert.certificate_id }}</p>", encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert "Second edition 9001" in page_text(pdf.render_pdf(signed, template_path=path))


def test_own_locale_folder_adds_a_language(signed: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "es.json").write_text(
        json.dumps({"title": "Certificado de vacunación", "dose_of": "{dose} de {total}"}),
        encoding="utf-8",
    )
    text = page_text(pdf.render_pdf(signed, locale="es", locales_dir=tmp_path))
    assert "Certificado de vacunación" in text and "1 de 2" in text
    assert "Vaccinated at" in text  # keys it lacks come from English


# -- refusals -------------------------------------------------------------------------------------


def test_catalog_with_a_bad_dose_pattern_is_refused(signed: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "de.json").write_text(json.dumps({"dose_of": "{dosis} von {total}"}), "utf-8")
    with pytest.raises(pdf.PdfError, match=r"dose_of .*\{dose\} and \{total\}"):
        pdf.render_pdf(signed, locale="de", locales_dir=tmp_path, qr_png=b"")


def test_no_font_for_a_locale_names_the_locale_and_the_setting(signed: dict[str, Any]) -> None:
    renderer = pdf.PdfRenderer(font_search={})
    with pytest.raises(pdf.PdfError, match=r"locale 'hi'.*plugins\.certificates\.pdf_fonts"):
        renderer.render(signed, locale="hi", qr_png=b"")


def test_configured_font_file_that_does_not_exist(signed: dict[str, Any]) -> None:
    with pytest.raises(pdf.PdfError, match=r"/nowhere/font\.ttf .*'hi'.*pdf_fonts"):
        pdf.render_pdf(signed, locale="hi", fonts="hi=/nowhere/font.ttf")


@needs_lohit
def test_characters_no_font_has_are_refused(signed: dict[str, Any]) -> None:
    signed["credentialSubject"]["name"] = "李小龙"
    renderer = pdf.PdfRenderer(font_search={"default": [LOHIT]})
    with pytest.raises(pdf.PdfError, match=r"no glyphs for '李小龙'.*pdf_fonts"):
        renderer.render(signed, locale="en", qr_png=b"")


def test_unknown_locale_lists_the_available_ones(signed: dict[str, Any]) -> None:
    with pytest.raises(pdf.PdfError, match="locale 'xx'; available: en, fr, hi"):
        pdf.render_pdf(signed, locale="xx")
    with pytest.raises(pdf.PdfError, match=r"locale '\.\./en'"):
        pdf.render_pdf(signed, locale="../en")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("<p>{{ cert.name </p>", "error on line 1"),
        ("<p>{{ cert.no_such_field }}</p>", "no_such_field"),
        ("<p>{{ labels.__class__.__mro__ }}</p>", "cannot be rendered"),
        ('<img src="/etc/hostname">', "only the QR code"),
        ('<img src="https://example.org/logo.png">', "nothing is read from files or the network"),
        ("<table><td>x</td></table>", "cannot be drawn"),
    ],
)
def test_bad_templates_are_refused(template: str, message: str, signed: dict[str, Any]) -> None:
    with pytest.raises(pdf.PdfError, match=message):
        pdf.render_pdf(signed, template=template, qr_png=b"")


def test_data_uri_logo_is_allowed(signed: dict[str, Any]) -> None:
    logo = pdf.data_uri(qr.qr_png(b"logo", scale=1))
    data = pdf.render_pdf(signed, template=f'<img src="{logo}"><p>{{{{ cert.name }}}}</p>')
    assert embedded_qr_payload(data) == b"logo"


def test_credential_without_subject_is_refused() -> None:
    with pytest.raises(pdf.PdfError, match="credentialSubject"):
        pdf.render_pdf({"id": "urn:x"}, qr_png=b"")


def test_fonts_setting_text_form() -> None:
    assert pdf.parse_fonts_setting("hi=/a.ttf, default=/b.ttf") == {
        "hi": Path("/a.ttf"),
        "default": Path("/b.ttf"),
    }
    with pytest.raises(pdf.PdfError, match="pdf_fonts must look like"):
        pdf.parse_fonts_setting("/a.ttf")
