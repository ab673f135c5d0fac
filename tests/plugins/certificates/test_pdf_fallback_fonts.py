"""A holder's name in a script the page language's font lacks (Devanagari on an English or French
certificate) is drawn with a fallback font found on the system, in every language, instead of
refusing the PDF; only characters no font of the system has are refused."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from open_registry.core import Settings
from open_registry.plugins.certificates import keys, pdf, suites
from tests.plugins.certificates.test_issuance import (
    certificates,
    deliver,
    first,
    make_client,
    vaccination,
)
from tests.plugins.certificates.test_pdf import LOHIT, font_names, page_text

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
needs_fonts = pytest.mark.skipif(
    not (LOHIT.is_file() and DEJAVU.is_file()),
    reason="fonts-lohit-deva and fonts-dejavu-core are not installed (CI installs them)",
)
NAME = "भया मित्र"


@pytest.fixture
def signed(credential: dict[str, Any], issuer_key: Ed25519PrivateKey) -> dict[str, Any]:
    credential["credentialSubject"]["name"] = NAME
    return suites.sign(credential, issuer_key, keys.did_key_method(issuer_key.public_key()))


def shows_the_name(data: bytes) -> bool:
    # pypdf reads a shaped "ि" (drawn before its consonant) out of order: look at the rest
    text = page_text(data)
    return "भया" in text and "त्र" in text


@needs_fonts
@pytest.mark.parametrize("locale", ["en", "fr", "hi", "fr-CA"])
def test_a_devanagari_name_renders_in_every_language(locale: str, signed: dict[str, Any]):
    data = pdf.render_pdf(signed, locale=locale, qr_png=b"")
    assert shows_the_name(data)
    fonts = font_names(data)
    assert any("Lohit" in f for f in fonts)
    if not locale.startswith("hi"):  # the page's own text keeps the language's font
        assert any("DejaVu" in f for f in fonts)


@needs_fonts
def test_another_locales_configured_font_is_a_fallback(signed: dict[str, Any]):
    renderer = pdf.PdfRenderer(
        fonts={"hi": LOHIT}, font_search={"default": [DEJAVU]}, system_fonts=False
    )
    data = renderer.render(signed, locale="en", qr_png=b"")
    assert shows_the_name(data) and len(font_names(data)) == 2


@needs_fonts
@pytest.mark.skipif(shutil.which("fc-list") is None, reason="fontconfig is not installed")
def test_the_systems_fonts_are_asked_for_what_no_known_font_has(signed: dict[str, Any]):
    renderer = pdf.PdfRenderer(font_search={"default": [DEJAVU]}, system_fonts=True)
    data = renderer.render(signed, locale="fr", qr_png=b"")
    assert shows_the_name(data)
    found = pdf._system_font_for(ord("भ"))
    assert found is not None and found.suffix.lower() in (".ttf", ".otf")


@needs_fonts
def test_without_any_font_for_the_script_the_pdf_is_refused_naming_the_setting(
    signed: dict[str, Any],
):
    renderer = pdf.PdfRenderer(font_search={"default": [DEJAVU]}, system_fonts=False)
    with pytest.raises(pdf.PdfError, match=r"no glyphs for 'भया.*plugins\.certificates\.pdf_fonts"):
        renderer.render(signed, locale="en", qr_png=b"")


@needs_fonts
def test_characters_no_system_font_has_are_refused(signed: dict[str, Any]):
    if pdf._system_font_for(ord("李")) is not None:
        pytest.skip("this system has a CJK font")
    signed["credentialSubject"]["name"] = "李小龙"
    with pytest.raises(pdf.PdfError, match=r"no glyphs for '李小龙'.*install a font"):
        pdf.render_pdf(signed, locale="en", qr_png=b"")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    yield from make_client(settings)


@needs_fonts
@pytest.mark.parametrize("lang", ["en", "fr", "hi"])
def test_the_pdf_route_serves_a_devanagari_name_in_every_language(client: TestClient, lang: str):
    recipient = first(client, "recipient", 4)
    resp = client.patch(f"/api/v1/recipient/{recipient['id']}", json={"name": NAME})
    assert resp.status_code == 200, resp.text
    vac = vaccination(client, recipient=4)
    deliver(client)
    [cert] = certificates(client, vac["id"])
    resp = client.get(f"/api/v1/certificates/{cert['id']}?format=pdf&lang={lang}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/pdf"
    assert shows_the_name(resp.content)
