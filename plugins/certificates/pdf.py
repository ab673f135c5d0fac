"""Certificate PDFs: an editable, localized HTML/Jinja2 template rendered by fpdf2 (no browser).

The template (`templates/certificate.html` by default, or any text or file the implementer
gives) is rendered by a sandboxed Jinja2 environment with the locale's label catalog
(`templates/locales/<locale>.json`, or a folder of their own) and the certificate's fields,
then drawn by fpdf2's `write_html`.

Fonts: when every character of the page is Latin-1 (English, French, most Latin names) the PDF
uses the built-in Helvetica and embeds nothing. Otherwise it needs a TrueType font: the one set
for the locale in the `plugins.certificates.pdf_fonts` setting, else the first of
`FONT_SEARCH[locale]` found on disk (Hindi: Debian's Lohit Devanagari), else the general Unicode
font (`pdf_fonts` key `default`, else DejaVu Sans / Liberation Sans). Characters it lacks (a
Devanagari name on an English or French page) are drawn with fallback fonts: the other fonts
set or searched for (any locale's), then the system's, found by fontconfig (`fc-list`). No font
is ever downloaded. Complex scripts (Devanagari, Arabic, ...) are shaped with HarfBuzz. A page
with no font at all, or a character no font of the system has, is an error naming the setting.

Compiled templates, catalogs, font character sets, shaped text (its widths and glyphs, per font
file, `_ShapedWidths`; pages the same, byte for byte, as without) and embedded font subsets (made
by `font_subsets`, per glyph set) are cached per process.
"""

from __future__ import annotations

import base64
import bisect
import copy
import functools
import html.parser
import io
import json
import re
import shutil
import subprocess
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fontTools import ttLib
from fpdf import FPDF, FontFace, TextStyle
from fpdf.enums import TextDirection
from fpdf.errors import FPDFException
from fpdf.fonts import SubsetMap, TTFFont
from jinja2.sandbox import SandboxedEnvironment

from open_registry.plugins.certificates import font_subsets, qr

TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_TEMPLATE = TEMPLATES / "certificate.html"
LOCALES = TEMPLATES / "locales"
#: the setting that names font files, by locale (and `default`)
FONTS_SETTING = "plugins.certificates.pdf_fonts"
#: where fonts are looked for when the setting names none, by locale; `default` for any locale
FONT_SEARCH: dict[str, tuple[str, ...]] = {
    "hi": (
        "/usr/share/fonts/truetype/lohit-devanagari/Lohit-Devanagari.ttf",
        "/usr/share/fonts/truetype/noto/NotoSansDevanagari-Regular.ttf",
        "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    ),
    "default": (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    ),
}
#: ranges of scripts whose text must be shaped (glyph reordering, conjuncts, joining)
_COMPLEX_SCRIPTS: tuple[tuple[int, int], ...]
_COMPLEX_SCRIPTS = ((0x0590, 0x08FF), (0x0900, 0x0DFF), (0x0E00, 0x0FFF), (0x1000, 0x109F))
_COMPLEX_SCRIPTS += ((0x1780, 0x17FF), (0xA800, 0xABFF), (0xFB1D, 0xFEFF))
_FAMILY = "certificate"
_FALLBACK = "certificate-fallback"
#: the most fallback fonts one page embeds
MAX_FALLBACKS = 8
#: words in a font file's name that mark a styled face (a regular one is preferred)
_STYLED = ("bold", "italic", "oblique", "light", "thin", "black", "mono", "condensed", "narrow")
_IGNORED = frozenset("\n\r\t")


class PdfError(ValueError):
    """A certificate PDF that cannot be made: the message names the template, locale or setting."""


#: bidirectional classes that make a text more than one left-to-right run (right-to-left
#: letters, Arabic digits, explicit embeddings, overrides and isolates)
_BIDI_CLASSES = frozenset(
    ("R", "AL", "AN", "LRE", "LRO", "RLE", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI")
)


def left_to_right(text: str) -> bool:
    """Whether the Unicode bidirectional algorithm makes `text` one left-to-right run."""
    return not any(unicodedata.bidirectional(c) in _BIDI_CLASSES for c in set(text))


class _Document(FPDF):
    """fpdf2's document, with one saving where text is shaped (Devanagari and other complex
    scripts): fpdf2 runs the Unicode bidirectional algorithm over every piece of text, a
    Python object per character; a text with no right-to-left character, digit or embedding
    is one left-to-right run, which it gets here without the algorithm. Other texts go through
    fpdf2 as before (`tests/plugins/certificates/test_pdf.py` checks both give the same PDF)."""

    def _preload_bidirectional_text(self, text: str, markdown: bool, *more: Any) -> Any:
        shaping = self.text_shaping
        if more or not (shaping and text) or shaping.get("direction") or not left_to_right(text):
            return super()._preload_bidirectional_text(text, markdown, *more)
        shaping["paragraph_direction"] = TextDirection.LTR
        shaping["fragment_direction"] = TextDirection.LTR
        style = self.font_style
        emphasis = ("B" in style, "I" in style, self.strikethrough, self.underline)
        return tuple(self._preload_font_styles(text, markdown, _initial_emphasis=emphasis))


# -- certificate fields ---------------------------------------------------------------------------


def mask_identity(value: str, keep: int = 4) -> str:
    """An identifier with all but its last `keep` characters replaced by X (a DID's prefix,
    `did:<method>:`, is dropped first); fully masked when it is not longer than `keep`."""
    value = value.strip()
    if value.startswith("did:"):
        value = value.rsplit(":", 1)[-1]
    if len(value) <= keep:
        return "X" * len(value)
    return "X" * (len(value) - keep) + value[-keep:]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return _text(value.get("name") or value.get("id"))
    return str(value).strip()


def _date(value: Any) -> str:
    text = _text(value)
    return text[:10] if re.match(r"\d{4}-\d{2}-\d{2}", text) else text


def certificate_fields(credential: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, str]:
    """What the page shows, read from a vaccination credential (our VC 2.0 shape or DIVOC's)."""
    subject = credential.get("credentialSubject")
    if isinstance(subject, list):
        subject = subject[0] if subject else None
    if not isinstance(subject, Mapping):
        raise PdfError("the credential has no credentialSubject object")
    evidence = credential.get("evidence")
    if isinstance(evidence, list):
        evidence = evidence[0] if evidence else {}
    if not isinstance(evidence, Mapping):
        evidence = {}
    dose, total = _text(evidence.get("dose")), _text(evidence.get("totalDoses"))
    try:
        dose_text = labels["dose_of"].format(dose=dose, total=total) if dose and total else dose
    except (KeyError, IndexError, ValueError) as exc:
        raise PdfError(
            f"the label dose_of ({labels['dose_of']!r}) may only use {{dose}} and {{total}}"
        ) from exc
    identity = _text(subject.get("id")) or _text(subject.get("refId"))
    return {
        "name": _text(subject.get("name")),
        "identity": mask_identity(identity) if identity else "",
        "vaccine": _text(evidence.get("vaccine")),
        "manufacturer": _text(evidence.get("manufacturer")),
        "batch": _text(evidence.get("batch")),
        "dose": dose_text,
        "date": _date(evidence.get("date")),
        "facility": _text(evidence.get("facility")),
        "issuer": _text(credential.get("issuer")),
        "certificate_id": _text(evidence.get("certificateId")) or _text(credential.get("id")),
        "valid_from": _date(credential.get("validFrom") or credential.get("issuanceDate")),
        "valid_until": _date(credential.get("validUntil") or evidence.get("effectiveUntil")),
    }


def _issued_at(credential: Mapping[str, Any]) -> datetime | None:
    text = _text(credential.get("validFrom") or credential.get("issuanceDate"))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


# -- cached resources -----------------------------------------------------------------------------


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


@functools.lru_cache(maxsize=64)
def _compile(text: str) -> jinja2.Template:
    env = SandboxedEnvironment(autoescape=True, undefined=jinja2.StrictUndefined)
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise PdfError(
            f"the certificate template has an error on line {exc.lineno}: {exc}"
        ) from exc


@functools.lru_cache(maxsize=32)
def _read_text(path: str, mtime: int) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PdfError(f"the certificate template {path} cannot be read: {exc}") from exc


@functools.lru_cache(maxsize=64)
def _catalog(path: str, mtime: int) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PdfError(f"the label catalog {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise PdfError(f"the label catalog {path} must be a JSON object of strings")
    return data


@functools.lru_cache(maxsize=32)
def _font_chars(path: str, mtime: int) -> frozenset[int]:
    try:
        font = ttLib.TTFont(path, lazy=True, fontNumber=0)
        cmap = font.getBestCmap() or {}
        font.close()
    except Exception as exc:  # fontTools raises many kinds for a file that is not a font
        raise PdfError(f"the font file {path} cannot be read: {exc}") from exc
    return frozenset(cmap)


@functools.lru_cache(maxsize=256)
def _system_font_for(code: int) -> Path | None:
    """A TrueType/OpenType font file of this system holding the character `code`, found by
    fontconfig (`fc-list :charset=<hex> file`; None without fontconfig or such a font). Regular
    faces are preferred over bold, italic, condensed or monospaced ones."""
    exe = shutil.which("fc-list")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, f":charset={code:x}", "file"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    files = {line.rsplit(":", 1)[0].strip() for line in done.stdout.splitlines() if ":" in line}
    fonts = [Path(f) for f in files if f.lower().endswith((".ttf", ".otf"))]

    def plainness(path: Path) -> tuple[bool, int, str]:
        name = path.stem.lower()
        return (any(w in name for w in _STYLED), len(name), str(path))

    return min(fonts, key=plainness, default=None)


class _ImageSources(html.parser.HTMLParser):
    """Collects the `src` of every <img> in the rendered page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs).get("src") or "")


def parse_fonts_setting(value: Any) -> dict[str, Path]:
    """The `pdf_fonts` setting: a table `{hi = "/path/font.ttf", default = "..."}` or the text
    `hi=/path/font.ttf,default=/path/other.ttf` (as an environment variable holds it)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise PdfError(
                f"{FONTS_SETTING} must look like 'hi=/path/font.ttf,default=/path/x.ttf'"
            )
        value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, Mapping):
        raise PdfError(f"{FONTS_SETTING} must be a table of locale = font file path")
    return {str(k): Path(str(v)) for k, v in value.items()}


# -- rendering ------------------------------------------------------------------------------------


class PdfRenderer:
    """Renders certificate PDFs with one template, font settings and label catalogs."""

    def __init__(
        self,
        *,
        template: str | None = None,
        template_path: str | Path | None = None,
        fonts: Mapping[str, str | Path] | str | None = None,
        locales_dir: str | Path | None = None,
        font_search: Mapping[str, Sequence[str | Path]] | None = None,
        system_fonts: bool | None = None,
    ) -> None:
        if template is not None and template_path is not None:
            raise PdfError("give a certificate template as text or as a file, not both")
        self.template = template
        self.template_path = Path(template_path) if template_path is not None else None
        self.fonts = parse_fonts_setting(fonts)
        self.locales_dir = Path(locales_dir) if locales_dir is not None else None
        search = FONT_SEARCH if font_search is None else font_search
        self.font_search = {k: tuple(Path(p) for p in v) for k, v in search.items()}
        #: ask fontconfig for a font with the characters no known font has (by default only
        #: with the shipped search paths: a test's own `font_search` stays self-contained)
        self.system_fonts = font_search is None if system_fonts is None else system_fonts

    # - inputs -

    def _template(self) -> jinja2.Template:
        if self.template is not None:
            return _compile(self.template)
        path = self.template_path or DEFAULT_TEMPLATE
        return _compile(_read_text(str(path), _mtime(path)))

    def labels(self, locale: str) -> dict[str, str]:
        """The label catalog of `locale` (`hi-IN` falls back to `hi`), missing keys from `en`."""
        folders = [d for d in (self.locales_dir, LOCALES) if d is not None]
        english = _catalog(str(LOCALES / "en.json"), _mtime(LOCALES / "en.json"))
        for name in dict.fromkeys((locale, locale.split("-")[0].split("_")[0])):
            if not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*", name):
                break
            for folder in folders:
                path = folder / f"{name}.json"
                if path.is_file():
                    return {**english, **_catalog(str(path), _mtime(path))}
        known = sorted({p.stem for d in folders if d.is_dir() for p in d.glob("*.json")})
        raise PdfError(
            f"no certificate labels for locale {locale!r}; available: {', '.join(known)}"
        )

    def _font_file(self, key: str) -> Path | None:
        configured = self.fonts.get(key)
        if configured is not None:
            if not configured.is_file():
                raise PdfError(
                    f"the font file {configured} set for locale {key!r} in {FONTS_SETTING} "
                    "does not exist"
                )
            return configured
        return next((p for p in self.font_search.get(key, ()) if p.is_file()), None)

    def _font_chain(self, locale: str) -> list[Path]:
        """Every usable font file, best first: the locale's (setting, then search paths), the
        `default` ones, then the fonts set or known for any other locale (a Devanagari name on
        an English page finds the Hindi font)."""
        language = locale.split("-")[0].split("_")[0]
        chain: list[Path] = []
        for key in dict.fromkeys((locale, language)):
            found = self._font_file(key)
            if found is not None:
                chain.append(found)
        if not chain:  # the locale has no font of its own: the default one leads
            default = self._font_file("default")
            chain += [default] if default is not None else []
        others = sorted(set(self.fonts) | set(self.font_search) - {locale, language, "default"})
        for key in (locale, language, "default", *others):
            configured = self.fonts.get(key)
            if configured is not None and configured.is_file():
                chain.append(configured)
            chain += [p for p in self.font_search.get(key, ()) if p.is_file()]
        return list(dict.fromkeys(chain))

    def _fonts_for(self, locale: str, page: str, chars: set[str]) -> tuple[Path, list[Path]]:
        """(main font, fallback fonts) able to draw every character in `chars` (those of
        `page`): the locale's font (else the default one), then, for the characters it lacks,
        the other fonts known (`_font_chain`), then the system's fonts (fontconfig)."""
        language = locale.split("-")[0].split("_")[0]
        chain = self._font_chain(locale)
        if not chain:
            raise PdfError(
                f"no font found for locale {locale!r} (its text is not Latin-1): set "
                f'{FONTS_SETTING} = {{{language} = "/path/to/font.ttf"}} in [plugins.certificates] '
                f"or REGISTRY_PLUGINS__CERTIFICATES__PDF_FONTS={language}=/path/to/font.ttf"
            )
        main = chain[0]
        missing = {ord(c) for c in chars} - _font_chars(str(main), _mtime(main))
        fallbacks: list[Path] = []
        for candidate in chain[1:]:
            if not missing:
                break
            covered = missing & _font_chars(str(candidate), _mtime(candidate))
            if covered:
                fallbacks.append(candidate)
                missing -= covered
        unresolved: set[int] = set()
        while missing - unresolved and self.system_fonts and len(fallbacks) < MAX_FALLBACKS:
            code = min(missing - unresolved)
            found = _system_font_for(code)
            if found is not None and found != main and found not in fallbacks:
                try:
                    covered = missing & _font_chars(str(found), _mtime(found))
                except PdfError:  # a file fontconfig lists that fontTools cannot read
                    covered = set()
                if covered:
                    fallbacks.append(found)
                    missing -= covered
                    continue
            unresolved.add(code)
        if missing:
            shown = "".join(dict.fromkeys(c for c in page if ord(c) in missing))[:10]
            tried = ", ".join(p.name for p in (main, *fallbacks))
            system = " and the system's fonts (fontconfig)" if self.system_fonts else ""
            raise PdfError(
                f"the fonts for locale {locale!r} ({tried}){system} have no glyphs for "
                f"{shown!r}: install a font that has them, or set one in {FONTS_SETTING} "
                f"(key {language!r} or 'default')"
            )
        return main, fallbacks

    # - output -

    def render(
        self,
        credential: Mapping[str, Any],
        *,
        locale: str = "en",
        qr_png: bytes | None = None,
    ) -> bytes:
        """The certificate PDF of `credential` in `locale`, with `qr_png` as its QR code (made
        from the DIVOC payload, or the compact one when that does not fit, when None)."""
        labels = self.labels(locale)
        if qr_png is None:
            qr_png = default_qr_png(credential)
        context = {
            "labels": labels,
            "cert": certificate_fields(credential, labels),
            "qr": data_uri(qr_png) if qr_png else "",
            "locale": locale,
            "credential": credential,
        }
        try:
            page = self._template().render(context)
        except jinja2.TemplateError as exc:
            raise PdfError(f"the certificate template cannot be rendered: {exc}") from exc
        _check_images(page)
        chars = set(page) - _IGNORED
        latin1 = all(ord(c) < 0x80 or 0xA0 <= ord(c) <= 0xFF for c in chars)
        pdf = _Document(format="A4", unit="mm")
        pdf.set_margins(20, 18, 20)
        pdf.set_title(labels["title"])
        pdf.set_lang(locale)
        pdf.set_creator("open-registry")
        issued = _issued_at(credential)
        if issued is not None:
            pdf.set_creation_date(issued)
        if latin1:
            family = "helvetica"
        else:
            family = _FAMILY
            main, fallbacks = self._fonts_for(locale, page, chars)
            _add_font(pdf, _FAMILY, "", main)
            if re.search(r"<th\b", page):  # table headings are bold: same face, second subset
                _add_font(pdf, _FAMILY, "B", main)
            names = [f"{_FALLBACK}-{n}" for n in range(len(fallbacks))]
            for name, fallback in zip(names, fallbacks, strict=True):
                _add_font(pdf, name, "", fallback)
            if names:
                pdf.set_fallback_fonts(names, exact_match=False)
            if any(lo <= ord(c) <= hi for c in chars for lo, hi in _COMPLEX_SCRIPTS):
                pdf.set_text_shaping(True)
        pdf.add_page()
        pdf.set_font(family, size=12)
        try:
            pdf.write_html(page, font_family=family, tag_styles=_tag_styles(family, not latin1))
            _drop_layout_tables(pdf)
            return bytes(pdf.output())
        except (FPDFException, NotImplementedError, KeyError, ValueError) as exc:
            raise PdfError(f"the certificate template cannot be drawn as a PDF: {exc}") from exc


#: shaped texts kept per font file (`_ShapedWidths`), at most this many each (widths and shapes)
MAX_SHAPED_WIDTHS = 20_000
#: whether embedded font subsets are made once per glyph set (`font_subsets`)
_SUBSETS_SHARED = font_subsets.install()
#: one glyph of a shaped text: (glyph id, the characters it draws, glyph name, width in font
#: units scaled, x advance, y advance, x offset, y offset, positioned)
_ShapedGlyph = tuple[int, tuple[int, ...], str, int, int, int, int, int, bool]
#: font file -> (its modification time, {(text, size, direction, script, language, features):
#: (glyphs, width)}, {the same keys: its glyphs}, its glyph names and advances once read:
#: {"order": [name by glyph id], "advances": {name: advance}})
_shaped_widths: dict[
    str,
    tuple[
        int,
        dict[tuple[Any, ...], tuple[int, float]],
        dict[tuple[Any, ...], tuple[_ShapedGlyph, ...]],
        dict[str, Any],
    ],
] = {}


def _shaping_key(text: str, size: float, params: dict[str, Any] | None) -> tuple[Any, ...]:
    if not params:
        return (text, size, None, None, None, ())
    features = params.get("features")
    return (
        text,
        size,
        params.get("fragment_direction"),
        params.get("script"),
        params.get("language"),
        tuple(sorted(features.items())) if features else (),
    )


class _ShapedWidths(TTFFont):
    """A TrueType font whose shaped texts are remembered for the process (per font file): fpdf2
    breaks lines by shaping each growing piece of a line with HarfBuzz again, then shapes each
    line again to draw it, and the template's labels are the same pieces on every page. Kept:
    a text's width, and its glyphs with their positions; what is per document (the glyph's
    code in this document's subset) is looked up for each page as before."""

    __slots__ = ()

    def get_text_width(
        self, text: str, font_size_pt: float, text_shaping_params: dict[str, Any] | None
    ) -> tuple[int, float]:
        """fpdf2's, with a shaped text's width looked up first (line breaking asks for the
        width of each growing piece of a line: about 1,200 times per Hindi page)."""
        if not text_shaping_params or self.is_symbol:
            return super().get_text_width(text, font_size_pt, text_shaping_params)
        if font_size_pt > self.biggest_size_pt:
            self.biggest_size_pt = font_size_pt
        found = _shaped_widths[str(self.ttffile)][1].get(
            _shaping_key(text, font_size_pt, text_shaping_params)
        )
        return found or self.shaped_text_width(text, font_size_pt, text_shaping_params)

    def shaped_text_width(
        self, text: str, font_size_pt: float, text_shaping_params: dict[str, Any] | None
    ) -> tuple[int, float]:
        key = _shaping_key(text, font_size_pt, text_shaping_params)
        widths = _shaped_widths[str(self.ttffile)][1]
        found = widths.get(key)
        if found is None:
            found = super().shaped_text_width(text, font_size_pt, text_shaping_params)
            if len(widths) >= MAX_SHAPED_WIDTHS:
                widths.clear()
            widths[key] = found
        return found

    def shape_text(
        self, text: str, font_size_pt: float, text_shaping_params: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """fpdf2's `shape_text` (each glyph's code in the subset, its characters, advances
        and offsets), with HarfBuzz's result for the text remembered."""
        if not text:
            return []
        key = _shaping_key(text, font_size_pt, text_shaping_params)
        shapes = _shaped_widths[str(self.ttffile)][2]
        glyphs = shapes.get(key)
        if glyphs is None:
            glyphs = self._shape(text, font_size_pt, text_shaping_params)
            if len(shapes) >= MAX_SHAPED_WIDTHS:
                shapes.clear()
            shapes[key] = glyphs
        drawn: list[dict[str, Any]] = []
        for gid, chars, name, width, x_advance, y_advance, x_offset, y_offset, forced in glyphs:
            glyph = self.subset.get_glyph(
                glyph=gid, unicode=chars, glyph_name=name, glyph_width=width
            )
            if glyph is None:
                continue
            drawn.append(
                {
                    "mapped_char": self.subset.pick_glyph(glyph),
                    "x_advance": x_advance,
                    "y_advance": y_advance,
                    "x_offset": x_offset,
                    "y_offset": y_offset,
                    "force_positioning": forced,
                }
            )
        return drawn

    def _shape(
        self, text: str, font_size_pt: float, text_shaping_params: dict[str, Any] | None
    ) -> tuple[_ShapedGlyph, ...]:
        """The glyphs HarfBuzz draws `text` with. A glyph gets the characters of its cluster
        (from its cluster's first character to the next cluster's, the characters before the
        first cluster going to the first) when it is the first glyph of that cluster; the
        others get none (what fpdf2 puts in the page's text layer)."""
        infos, positions = self.perform_harfbuzz_shaping(text, font_size_pt, text_shaping_params)
        starts = sorted({int(info.cluster) for info in infos})
        owner: dict[int, list[int]] = {}
        for index, char in enumerate(text):
            at = bisect.bisect_right(starts, index) - 1
            owner.setdefault(starts[max(at, 0)], []).append(ord(char))
        tables = _shaped_widths[str(self.ttffile)][3]
        if not tables:  # read from the font once per file (each page has its own copy)
            tables["advances"] = {n: m[0] for n, m in self.ttfont["hmtx"].metrics.items()}
            tables["order"] = list(self.ttfont.getGlyphOrder())
        order, advances = tables["order"], tables["advances"]
        glyphs: list[_ShapedGlyph] = []
        for info, position in zip(infos, positions, strict=True):
            name = order[info.codepoint]
            width = round(self.scale * advances[name])
            moved = (position.x_offset, position.y_offset, position.y_advance) != (0, 0, 0)
            glyphs.append(
                (
                    info.codepoint,
                    tuple(owner.pop(int(info.cluster), ())),
                    name,
                    width,
                    position.x_advance,
                    position.y_advance,
                    position.x_offset,
                    position.y_offset,
                    moved or width != position.x_advance,
                )
            )
        return tuple(glyphs)


#: fonts as fpdf2 reads them, with their files' bytes, by (file, modification time, family,
#: style): each document gets a copy (`_add_font`); at most `MAX_READ_FONTS` kept
_read_fonts: dict[tuple[str, int, str, str], tuple[TTFFont, bytes]] = {}
_read_fonts_lock = threading.Lock()
MAX_READ_FONTS = 32


def _read_font(family: str, style: str, path: Path) -> tuple[TTFFont, bytes] | None:
    """The font as fpdf2 reads it (its character widths, glyph ids and descriptor, and its
    HarfBuzz font), read once per process; None for a font fpdf2 changes while reading it (a
    TrueType font without a `.notdef` glyph, which fpdf2 draws one for) or one of another kind
    (CFF outlines, compressed, colour glyphs): those are read for every document."""
    key = (str(path), _mtime(path), family.lower(), style)
    found = _read_fonts.get(key)
    if found is not None:
        return found
    scratch = FPDF()
    scratch.add_font(family, style, str(path))
    font = scratch.fonts.get(f"{family.lower()}{style}")
    if type(font) is not TTFFont or font.is_cff or font.is_compressed or font.color_font:
        return None
    data = path.read_bytes()
    if ".notdef" not in ttLib.TTFont(io.BytesIO(data), lazy=True).getGlyphOrder():
        return None
    font.hbfont  # noqa: B018 (made now: the copies share it)
    with _read_fonts_lock:
        if len(_read_fonts) >= MAX_READ_FONTS:
            _read_fonts.clear()
        _read_fonts[key] = (font, data)
    return font, data


def _add_font(pdf: FPDF, family: str, style: str, path: Path) -> None:
    """`pdf.add_font`, with savings that leave the page as it was:

    - the font is read once per process (`_read_font`) and each document gets a copy (fpdf2's
      own copy, which shares what drawing does not change: the character map, the descriptor,
      the HarfBuzz font) with its own glyph subset and a font file of its own;
    - the font is marked for `font_subsets`, which makes its embedded subset (a glyf font) or
      leaves it to fontTools (a CFF one); fontTools then writes it as it is read, the glyphs'
      bounding boxes those of the font file, not computed again from every outline
      (`recalcBBoxes`);
    - shaped texts are remembered across documents (`_ShapedWidths`)."""
    fontkey = f"{family.lower()}{style}"
    read = _read_font(family, style, path)
    if read is None:
        pdf.add_font(family, style, str(path))
    else:
        copied = copy.deepcopy(read[0])
        copied.ttfont = ttLib.TTFont(io.BytesIO(read[1]), recalcTimestamp=False, lazy=True)
        copied.i = len(pdf.fonts) + 1
        copied.subset = SubsetMap(copied)
        pdf.fonts[fontkey] = copied
    font = pdf.fonts.get(fontkey)
    if type(font) is not TTFFont:  # a future fpdf2 with another font class: as it comes
        return
    font.ttfont.recalcBBoxes = False
    mtime, name = _mtime(path), str(font.ttffile)
    if _shaped_widths.get(name, (None,))[0] != mtime:  # new, or the file was replaced
        _shaped_widths[name] = (mtime, {}, {}, {})
    font.__class__ = _ShapedWidths
    if _SUBSETS_SHARED:
        font_subsets.mark(font, name, mtime)


#: OpenType layout tables: HarfBuzz shaped the text from the font file; fpdf2 leaves them out
#: of the embedded subset, but fontTools still reads them while it subsets
_LAYOUT_TABLES = ("GSUB", "GPOS", "GDEF")


def _drop_layout_tables(pdf: FPDF) -> None:
    """Once the page is drawn: the layout tables out of the fonts about to be subset (they
    would be dropped from the subset anyway), so they are not read for nothing."""
    for font in pdf.fonts.values():
        if isinstance(font, _ShapedWidths):
            for tag in _LAYOUT_TABLES:
                if tag in font.ttfont:
                    del font.ttfont[tag]


def _check_images(page: str) -> None:
    """Refuse an <img> that fpdf2 would read from a file or the network: the page may show
    the QR code (a data: URI itself) and other data:image/png or jpeg URIs only."""
    parser = _ImageSources()
    parser.feed(page)
    for src in parser.sources:
        if not src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")):
            raise PdfError(
                f"the certificate template shows the image {src[:60]!r}: only the QR code "
                '(src="{{ qr }}") and data:image/png or jpeg URIs are allowed; nothing is '
                "read from files or the network"
            )


def _tag_styles(family: str, ttf: bool) -> dict[str, FontFace]:
    """Heading styles for the page; with a TrueType font every tag keeps to the one (regular)
    face that is embedded (a bold face would be a second font to embed)."""
    weight = "" if ttf else "B"
    sizes = {"h1": 22, "h2": 18, "h3": 15, "h4": 13, "h5": 12, "h6": 11}
    styles: dict[str, FontFace] = {
        tag: TextStyle(
            font_family=family,
            font_style=weight,
            font_size_pt=size,
            color="#1a3c6e",
            t_margin=2,
            b_margin=2,
        )
        for tag, size in sizes.items()
    }
    if ttf:
        for tag in ("b", "strong", "i", "em", "code"):
            styles[tag] = FontFace(family=family, emphasis="NONE")
        styles["dt"] = TextStyle(font_family=family, font_style="")
        styles["pre"] = TextStyle(font_family=family)
    return styles


def default_qr_png(credential: Mapping[str, Any], *, scale: int = 2) -> bytes:
    """The QR picture a PDF shows when none is given: DIVOC's ZIP payload, or the compact one
    when the ZIP does not fit version 25."""
    try:
        return qr.qr_png(qr.divoc_payload(dict(credential)), scale=scale)
    except qr.QRError:
        try:
            return qr.qr_png(qr.compact_payload(dict(credential)), scale=scale)
        except qr.QRError as exc:
            raise PdfError(f"the certificate's QR code cannot be made: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _renderer(
    template: str | None,
    template_path: str | None,
    fonts: tuple[tuple[str, str], ...],
    locales_dir: str | None,
) -> PdfRenderer:
    return PdfRenderer(
        template=template,
        template_path=template_path,
        fonts=dict(fonts),
        locales_dir=locales_dir,
    )


def render_pdf(
    credential: Mapping[str, Any],
    *,
    locale: str = "en",
    template: str | None = None,
    qr_png: bytes | None = None,
    template_path: str | Path | None = None,
    fonts: Mapping[str, str | Path] | str | None = None,
    locales_dir: str | Path | None = None,
) -> bytes:
    """The certificate PDF of `credential` (see `PdfRenderer`): `template` is template text,
    `template_path` a template file (the `pdf_template` setting), `fonts` the `pdf_fonts`
    setting, `locales_dir` a folder of `<locale>.json` label catalogs."""
    font_items = tuple(sorted((k, str(v)) for k, v in parse_fonts_setting(fonts).items()))
    renderer = _renderer(
        template,
        str(template_path) if template_path is not None else None,
        font_items,
        str(locales_dir) if locales_dir is not None else None,
    )
    return renderer.render(credential, locale=locale, qr_png=qr_png)


def data_uri(image: bytes, kind: str = "png") -> str:
    """A data: URI of a PNG or JPEG picture, for a logo in a template."""
    return f"data:image/{kind};base64,{base64.b64encode(image).decode('ascii')}"
