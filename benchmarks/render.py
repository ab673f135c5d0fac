"""QR codes and PDFs of certificates, per certificate, one core: our QR path against segno.

Measured in the same run, on the same signed credentials (random names and ids, did:key issuer,
eddsa-rdfc-2022):

- payload sizes (compact JSON, DIVOC's ZIP, raw deflate) and the QR version each needs at
  level M, for our credentials and DIVOC's two signed samples;
- ms per QR, PNG and SVG, for both payloads: `qr.qr_png` / `qr.qr_svg` (zint through zxing-cpp,
  our 1-bit PNG and one-path SVG writers) against the baseline, segno with its automatic mask
  (`segno.make(..., mode="byte", error="m")` + `save(kind="png"|"svg")`), and segno with a
  fixed mask; ratios baseline/ours;
- ms per PDF (`pdf.render_pdf`) in English, French and Hindi (when a Devanagari font is found),
  with the QR picture given, plus the Hindi page without HarfBuzz shaping (wrong glyph order:
  only to show what shaping costs) and the English page with its QR made on the way;
- the baseline for PDFs, per locale: a bare fpdf2 page with the same content (`bare_page`: the
  same labels, fields and QR picture in the same layout, drawn by plain fpdf2 calls with the
  same font, without template or HTML), and the ratios ours/bare and Hindi/English.

Times are CPU time of this (pinned) process, median of `--rounds` passes over the sample, so
other load on the machine counts little; the PDF rows (ours and the bare pages) take their
passes in turn, one of each per round, so that a slower spell of a shared machine falls on all
of them and their ratios hold. Every QR made in the run is first read back (zxing-cpp)
and compared. Prints figures and ratios, never asserts them; the last line is JSON.

    .venv/bin/python benchmarks/render.py --quick
    .venv/bin/python benchmarks/render.py
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import random
import statistics
import string
from collections.abc import Callable
from typing import Any

import harness
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from open_registry.plugins.certificates import keys, pdf, qr, shortcut, suites
from tests.plugins.certificates.conftest import DIVOC, VACCINATION_CREDENTIAL

NAMES = ["Bhaya Mitra", "Zoë Dupont", "Ngozi Okonkwo-Adebayo", "José Álvarez", "Anh Nguyen"]
SAMPLES = ["ed25519-signed-sample.extracted.json", "rsa-signed-sample.extracted.json"]
#: the labels the certificate page shows (its catalog has others, for other pages)
PAGE_LABELS = (
    "title",
    "certificate_id",
    "name",
    "identity",
    "vaccine",
    "dose",
    "date",
    "batch",
    "facility",
    "issuer",
    "scan",
)


def credentials(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """`n` signed vaccination credentials with random names, ids, batches and doses."""
    key = Ed25519PrivateKey.generate()
    issuer, method = keys.did_key(key.public_key()), keys.did_key_method(key.public_key())
    out = []
    for _ in range(n):
        doc = copy.deepcopy(VACCINATION_CREDENTIAL)
        doc["issuer"] = issuer
        doc["id"] = f"urn:uuid:{rng.getrandbits(128):032x}"
        subject, evidence = doc["credentialSubject"], doc["evidence"][0]
        subject["name"] = f"{rng.choice(NAMES)} {''.join(rng.choices(string.ascii_letters, k=5))}"
        subject["id"] = f"did:example:{rng.randint(10**11, 10**12)}"
        evidence["certificateId"] = str(rng.randint(10**9, 10**10))
        evidence["batch"] = "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
        evidence["dose"] = rng.randint(1, 2)
        out.append(suites.sign(doc, key, method, canonicalizer=shortcut.canonicalize))
    return out


_CONSONANTS = "कखगघचजटडतथदधनपबभमयरलवशषसह"
_SIGNS = ("", "ा", "ि", "ी", "ु", "ू", "े", "ै", "ो", "ौ", "ं")


def devanagari_name(rng: random.Random) -> str:
    """A random two-word Devanagari name with conjuncts (consonant, virama, consonant): a glyph
    set no page had before, as a real Hindi name often is."""

    def syllable() -> str:
        head = rng.choice(_CONSONANTS)
        if rng.random() < 0.4:
            head += "\u094d" + rng.choice(_CONSONANTS)
        return head + rng.choice(_SIGNS)

    return " ".join("".join(syllable() for _ in range(rng.randint(2, 4))) for _ in range(2))


def latin_name(rng: random.Random) -> str:
    """A random two-word name in Latin letters, with an accented one now and then."""
    letters = string.ascii_lowercase + "éèüöñç"
    return " ".join(
        "".join(rng.choices(letters, k=rng.randint(4, 8))).capitalize() for _ in range(2)
    )


def renamed(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return {**doc, "credentialSubject": {**doc["credentialSubject"], "name": name}}


def ms_each(fn: Callable[[Any], Any], items: list[Any], rounds: int) -> float:
    """Median over `rounds` passes of CPU milliseconds per item."""
    return statistics.median(harness.seconds_per_item(fn, items, rounds)) * 1000


def interleaved(
    arms: dict[str, Callable[[Any], Any]], items: list[Any], rounds: int
) -> dict[str, float]:
    """`ms_each` of every arm, their passes taken in turn (each round one pass of each, the
    order rotated every round), so that a slower spell of the machine falls on every arm alike
    and the ratios between them hold; a warm-up pass of each first."""
    order = list(arms)
    for label in order:
        for item in items:
            arms[label](item)
    passes: dict[str, list[float]] = {label: [] for label in order}
    for r in range(rounds):
        turn = order[r % len(order) :] + order[: r % len(order)]
        for label in turn:
            passes[label] += harness.seconds_per_item(arms[label], items, 1)
    return {label: statistics.median(v) * 1000 for label, v in passes.items()}


def segno_png(payload: bytes, mask: int | None = None) -> bytes:
    code = segno.make(payload, error="m", mode="byte", boost_error=False, micro=False, mask=mask)
    out = io.BytesIO()
    code.save(out, kind="png", scale=4)
    return out.getvalue()


def segno_svg(payload: bytes, mask: int | None = None) -> bytes:
    code = segno.make(payload, error="m", mode="byte", boost_error=False, micro=False, mask=mask)
    out = io.BytesIO()
    code.save(out, kind="svg")
    return out.getvalue()


def bare_page(doc: dict[str, Any], locale: str, png: bytes, font: str | None) -> bytes:
    """The baseline: the same page's content drawn by plain fpdf2 calls, as an engineer would
    write it for this one layout. Title, certificate id, the 8 label/value rows as an fpdf2
    table (36%/64% columns, borders), the QR picture and the scan line, in the locale's labels;
    Helvetica, or the TrueType `font` with HarfBuzz shaping when the page is not Latin-1 (the
    renderer's choice of font for that locale). No template, no HTML."""
    labels = pdf.PdfRenderer().labels(locale)
    cert = pdf.certificate_fields(doc, labels)
    page = pdf.FPDF(format="A4", unit="mm")
    page.set_margins(20, 18, 20)
    family = "helvetica"
    if font is not None:
        family = "certificate"
        page.add_font(family, "", font)
        page.set_text_shaping(True)
    page.add_page()
    page.set_font(family, size=22)
    page.set_text_color(0x1A, 0x3C, 0x6E)
    page.multi_cell(0, 10, labels["title"], align="C", new_x="LMARGIN", new_y="NEXT")
    page.set_font(family, size=10)
    page.set_text_color(0x55, 0x55, 0x55)
    page.multi_cell(
        0,
        6,
        f"{labels['certificate_id']}: {cert['certificate_id']}",
        align="C",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    page.set_font(family, size=12)
    page.set_text_color(0, 0, 0)
    vaccine = cert["vaccine"] + (f" ({cert['manufacturer']})" if cert["manufacturer"] else "")
    rows = [
        (labels["name"], cert["name"]),
        (labels["identity"], cert["identity"]),
        (labels["vaccine"], vaccine),
        (labels["dose"], cert["dose"]),
        (labels["date"], cert["date"]),
        (labels["batch"], cert["batch"]),
        (labels["facility"], cert["facility"]),
        (labels["issuer"], cert["issuer"]),
    ]
    with page.table(col_widths=(36, 64), first_row_as_headings=False, padding=1) as table:
        for label, value in rows:
            table.row((label, value))
    page.ln(4)
    page.image(io.BytesIO(png), x=(page.w - 50) / 2, w=50, h=50)
    page.set_font(family, size=9)
    page.set_text_color(0x55, 0x55, 0x55)
    page.multi_cell(0, 5, labels["scan"], align="C")
    return bytes(page.output())


def page_font(locale: str, doc: dict[str, Any]) -> str | None:
    """The TrueType font the renderer uses for `locale`'s page (None: Helvetica)."""
    renderer = pdf.PdfRenderer()
    labels = renderer.labels(locale)
    shown = [labels[key] for key in PAGE_LABELS]
    text = "".join(shown) + "".join(pdf.certificate_fields(doc, labels).values())
    if all(ord(c) < 0x80 or 0xA0 <= ord(c) <= 0xFF for c in text):
        return None
    return str(renderer._fonts_for(locale, text, set(text))[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small samples (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="passes per figure (median)")
    harness.add_pin_option(parser)
    args = parser.parse_args()
    cpus = harness.pin_to_one_cpu(args)
    n, n_segno, rounds = (10, 3, 2) if args.quick else (60, 15, 3)
    rounds = args.rounds or rounds

    rng = random.Random(6)
    docs = credentials(n, rng)
    samples = {name.split("-")[0]: json.loads((DIVOC / name).read_text()) for name in SAMPLES}
    kinds = {"divoc": qr.divoc_payload, "compact": qr.compact_payload}
    payloads = {kind: [make(d) for d in docs] for kind, make in kinds.items()}

    # correctness first: every code reads back to its payload
    unread = sum(
        qr.decode_image(qr.qr_png(p, scale=2)) != p for ps in payloads.values() for p in ps
    )
    print(f"{cpus}; {n} signed credentials")
    print(f"QR codes that did not read back: {unread}/{sum(map(len, payloads.values()))}")

    sizes: dict[str, Any] = {}
    print("\npayload sizes (bytes) and QR version at level M (limit: version 25, 997 bytes)")
    rows = {"ours (median)": docs[n // 2], **{f"DIVOC {k} sample": v for k, v in samples.items()}}
    for label, doc in rows.items():
        entry: dict[str, Any] = {"json": len(qr.compact_json(doc))}
        for kind, make in kinds.items():
            payload = make(doc)
            try:
                version = f"v{qr.encode(payload).version}"
            except qr.QRError:
                version = "over v25"
            entry[kind] = {"bytes": len(payload), "version": version}
        sizes[label] = entry
        print(
            f"  {label:<22} json {entry['json']:>5}  divoc zip {entry['divoc']['bytes']:>5}"
            f" ({entry['divoc']['version']})  compact {entry['compact']['bytes']:>5}"
            f" ({entry['compact']['version']})"
        )

    qr_ms: dict[str, dict[str, float]] = {}
    print("\nms per QR code (CPU, one core, median)")
    print(
        f"  {'payload/output':<16} {'ours':>7} {'segno fixed mask':>17} {'segno auto':>11}"
        f" {'auto/ours':>10} {'fixed/ours':>11}"
    )
    for kind, ps in payloads.items():
        for output, ours, theirs in (
            ("png", qr.qr_png, segno_png),
            ("svg", qr.qr_svg, segno_svg),
        ):
            mine = ms_each(ours, ps, rounds)
            fixed = ms_each(lambda p, f=theirs: f(p, mask=0), ps[:n_segno], rounds)
            auto = ms_each(theirs, ps[:n_segno], rounds)
            qr_ms[f"{kind} {output}"] = {"ours": mine, "segno_fixed": fixed, "segno_auto": auto}
            print(
                f"  {kind + ' ' + output:<16} {mine:>7.2f} {fixed:>17.2f} {auto:>11.2f}"
                f" {auto / mine:>9.1f}x {fixed / mine:>10.1f}x"
            )

    pdf_ms: dict[str, float] = {}
    png = {id(d): qr.qr_png(qr.divoc_payload(d), scale=2) for d in docs}
    print(
        "\nms per PDF (CPU, one core, median; QR picture given unless said;"
        " the rows' passes taken in turn)"
    )
    locales = ["en", "fr"]
    try:
        pdf.render_pdf(docs[0], locale="hi", qr_png=b"")
        locales.append("hi")
    except pdf.PdfError as exc:
        print(f"  hi skipped: {exc}")
    arms: dict[str, Callable[[Any], Any]] = {
        locale: (lambda d, loc=locale: pdf.render_pdf(d, locale=loc, qr_png=png[id(d)]))
        for locale in locales
    }
    arms["en, QR made too"] = lambda d: pdf.render_pdf(d)
    if "hi" in locales:
        shaping = pdf.FPDF.set_text_shaping

        def unshaped(d: Any) -> Any:
            pdf.FPDF.set_text_shaping = lambda self, *a, **k: None  # type: ignore[method-assign]
            try:
                return pdf.render_pdf(d, locale="hi", qr_png=png[id(d)])
            finally:
                pdf.FPDF.set_text_shaping = shaping  # type: ignore[method-assign]

        arms["hi, no shaping (wrong)"] = unshaped
    for locale in locales:
        font = page_font(locale, docs[0])
        arms[f"bare {locale}"] = lambda d, loc=locale, f=font: bare_page(d, loc, png[id(d)], f)
    timed = interleaved(arms, docs, rounds)
    bare_ms = {loc: timed.pop(f"bare {loc}") for loc in locales}
    pdf_ms.update(timed)
    if "hi" in locales:
        # pages of names no page had: they fill the caches of shaped texts and font subsets,
        # which the rows above keep warm, so they are timed apart, in turn with English again
        names = random.Random(7)
        fresh = interleaved(
            {
                "en (again)": arms["en"],
                "hi, new Latin name": lambda d: pdf.render_pdf(
                    renamed(d, latin_name(names)), locale="hi", qr_png=png[id(d)]
                ),
                "hi, new Devanagari name": lambda d: pdf.render_pdf(
                    renamed(d, devanagari_name(names)), locale="hi", qr_png=png[id(d)]
                ),
            },
            docs,
            rounds,
        )
        english_again = fresh.pop("en (again)")
        pdf_ms.update(fresh)
    for label, value in pdf_ms.items():
        bare = bare_ms.get(label)
        versus = f"   bare fpdf2 {bare:>6.2f}  ours/bare {value / bare:.2f}x" if bare else ""
        print(f"  {label:<24} {value:>7.2f}{versus}")
    if "hi" in pdf_ms:
        print(
            f"  HarfBuzz shaping adds {pdf_ms['hi'] - pdf_ms['hi, no shaping (wrong)']:.1f} ms;"
            f" Hindi/English {pdf_ms['hi'] / pdf_ms['en']:.1f}x"
            f" (bare fpdf2: {bare_ms['hi'] / bare_ms['en']:.1f}x)"
        )
        print(
            "  'new ... name': every page a name no page had (the rows above repeat the sample's"
            " names over rounds, whose font subsets and shaped texts are then kept), so each"
            " shapes its name and makes its font subset:"
            f" {pdf_ms['hi, new Latin name'] / english_again:.1f}x and"
            f" {pdf_ms['hi, new Devanagari name'] / english_again:.1f}x English"
            f" (English timed again in turn with them: {english_again:.2f} ms)"
        )
    print(
        "  bare fpdf2: the same labels and fields, QR picture and layout drawn by plain fpdf2"
        " calls (multi_cell, table, image), same font, no template or HTML"
    )

    print(
        "\ntargets (reported, not asserted): QR <= 5 ms, PDF <= 20 ms, PDF <= 1.5x bare fpdf2,"
        " Hindi <= 2x English"
    )
    worst_qr = max(v["ours"] for v in qr_ms.values())
    print(
        f"  slowest QR here: {worst_qr:.2f} ms; PDF en {pdf_ms['en']:.2f} ms,"
        f" {pdf_ms['en'] / bare_ms['en']:.2f}x bare fpdf2"
        + (f"; Hindi/English {pdf_ms['hi'] / pdf_ms['en']:.2f}x" if "hi" in pdf_ms else "")
    )
    ratios = {loc: pdf_ms[loc] / bare_ms[loc] for loc in bare_ms}
    print(
        json.dumps(
            {
                "unread": unread,
                "sizes": sizes,
                "qr_ms": qr_ms,
                "pdf_ms": pdf_ms,
                "bare_fpdf2_ms": bare_ms,
                "pdf_over_bare": ratios,
            }
        )
    )


if __name__ == "__main__":
    main()
