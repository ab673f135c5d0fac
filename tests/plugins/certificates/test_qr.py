"""QR payloads and codes: round trips through real PNG pictures read by zxing-cpp, the matrix
checked by an independent reader written here (format information, codeword placement and
block interleaving from ISO/IEC 18004, with segno's tables), the SVG rasterised by Chromium,
and every way a payload or picture can be refused."""

from __future__ import annotations

import copy
import io
import json
import os
import random
import zipfile
import zlib
from typing import Any

import pytest
from PIL import Image
from segno import consts

from open_registry.plugins.certificates import qr, suites
from tests.browser import running_chromium
from tests.plugins.certificates.conftest import DIVOC, read_json

SAMPLES = ["ed25519-signed-sample.extracted.json", "rsa-signed-sample.extracted.json"]
PAYLOADS = {"divoc": qr.divoc_payload, "compact": qr.compact_payload}


# -- an independent reader of the module matrix ---------------------------------------------------

_MASKS = [
    lambda i, j: (i + j) % 2 == 0,
    lambda i, j: i % 2 == 0,
    lambda i, j: j % 3 == 0,
    lambda i, j: (i + j) % 3 == 0,
    lambda i, j: (i // 2 + j // 3) % 2 == 0,
    lambda i, j: (i * j) % 2 + (i * j) % 3 == 0,
    lambda i, j: ((i * j) % 2 + (i * j) % 3) % 2 == 0,
    lambda i, j: ((i + j) % 2 + (i * j) % 3) % 2 == 0,
]
_LEVELS = {0b01: "L", 0b00: "M", 0b11: "Q", 0b10: "H"}


def _function_modules(version: int) -> list[list[bool]]:
    """Finder, separator, timing, alignment, format and version areas (not data)."""
    n = 17 + 4 * version
    taken = [[False] * n for _ in range(n)]

    def box(r0: int, c0: int, h: int, w: int) -> None:
        for r in range(max(r0, 0), min(r0 + h, n)):
            for c in range(max(c0, 0), min(c0 + w, n)):
                taken[r][c] = True

    for r0, c0 in ((0, 0), (0, n - 8), (n - 8, 0)):
        box(r0, c0, 8, 8)
    box(6, 0, 1, n)
    box(0, 6, n, 1)
    box(8, 0, 1, 9)
    box(0, 8, 9, 1)
    box(8, n - 8, 1, 8)
    box(n - 8, 8, 8, 1)
    if version >= 7:
        box(0, n - 11, 6, 3)
        box(n - 11, 0, 3, 6)
    centres = consts.ALIGNMENT_POS[version - 2] if version > 1 else ()
    for r in centres:
        for c in centres:
            if (r, c) not in ((6, 6), (6, centres[-1]), (centres[-1], 6)):
                box(r - 2, c - 2, 5, 5)
    return taken


def read_matrix(matrix: qr.QRMatrix) -> tuple[str, list[tuple[int, bytes | None]]]:
    """(error correction level, [(mode, bytes of a byte-mode segment)]) read from the modules."""
    n = matrix.size
    version = (n - 17) // 4

    def dark(r: int, c: int) -> int:
        return matrix.modules[r * n + c]

    spots = [(8, c) for c in range(6)] + [(8, 7), (8, 8), (7, 8)]
    spots += [(r, 8) for r in (5, 4, 3, 2, 1, 0)]
    fmt = int("".join(str(dark(r, c)) for r, c in spots), 2) ^ 0b101010000010010
    level, mask = _LEVELS[fmt >> 13], (fmt >> 10) & 7
    taken = _function_modules(version)
    bits: list[int] = []
    upward, col = True, n - 1
    while col > 0:
        if col == 6:
            col -= 1
        for r in range(n - 1, -1, -1) if upward else range(n):
            for c in (col, col - 1):
                if not taken[r][c]:
                    bits.append(dark(r, c) ^ _MASKS[mask](r, c))
        upward, col = not upward, col - 2
    codewords = [int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits) - 7, 8)]
    assert level == "M"
    sizes = [
        ec.num_data
        for ec in consts.ECC[version][consts.ERROR_LEVEL_M]
        for _ in range(ec.num_blocks)
    ]
    blocks: list[list[int]] = [[] for _ in sizes]
    it = iter(codewords)
    for k in range(max(sizes)):
        for b, size in enumerate(sizes):
            if k < size:
                blocks[b].append(next(it))
    stream = "".join(f"{x:08b}" for block in blocks for x in block)
    segments: list[tuple[int, bytes | None]] = []
    pos = 0
    while pos + 4 <= len(stream):
        mode = int(stream[pos : pos + 4], 2)
        pos += 4
        if mode == 0:  # terminator
            break
        if mode != 0b0100:
            segments.append((mode, None))
            break
        width = 8 if version < 10 else 16
        count = int(stream[pos : pos + width], 2)
        pos += width
        segments.append(
            (mode, bytes(int(stream[pos + 8 * k : pos + 8 * k + 8], 2) for k in range(count)))
        )
        pos += 8 * count
    return level, segments


def assert_byte_mode_code(payload: bytes) -> qr.QRMatrix:
    matrix = qr.encode(payload)
    assert matrix.version <= qr.MAX_VERSION
    assert matrix.size == 17 + 4 * matrix.version
    assert len(matrix.modules) == matrix.size**2
    level, segments = read_matrix(matrix)
    assert level == "M"
    # one byte-mode segment (mode 0100), no ECI header, holding exactly the payload
    assert segments == [(0b0100, payload)]
    return matrix


# -- payloads -------------------------------------------------------------------------------------


def test_byte_limit_is_version_25_at_level_m() -> None:
    data_codewords = sum(ec.num_blocks * ec.num_data for ec in consts.ECC[25][consts.ERROR_LEVEL_M])
    assert (data_codewords * 8 - 4 - 16) // 8 == qr.MAX_PAYLOAD_BYTES


def test_divoc_payload_is_a_zip_holding_compact_certificate_json(signed: dict[str, Any]) -> None:
    payload = qr.divoc_payload(signed)
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        assert archive.namelist() == ["certificate.json"]
        info = archive.getinfo("certificate.json")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        text = archive.read("certificate.json")
    assert text == qr.compact_json(signed)
    compact = json.dumps(signed, separators=(",", ":"), ensure_ascii=False).encode()
    assert text == compact
    assert qr.divoc_payload(copy.deepcopy(signed)) == payload  # deterministic


def test_compact_payload_is_raw_deflate(signed: dict[str, Any]) -> None:
    payload = qr.compact_payload(signed)
    assert zlib.decompress(payload, wbits=-15) == qr.compact_json(signed)
    assert len(payload) < len(qr.divoc_payload(signed)) < len(qr.compact_json(signed))


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_signed_credential_round_trips_through_a_png(kind: str, signed: dict[str, Any]) -> None:
    payload = PAYLOADS[kind](signed)
    assert_byte_mode_code(payload)
    png = qr.qr_png(payload, scale=3)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert qr.decode_image(png) == payload
    back = qr.decode_payload(qr.decode_image(png))
    assert back == signed
    assert suites.verify(back).verified


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_divoc_signed_samples_round_trip(kind: str, sample: str) -> None:
    certificate = read_json(DIVOC / sample)
    payload = PAYLOADS[kind](certificate)
    if kind == "divoc" and sample.startswith("rsa"):
        # an RSA-2048 signature is 344 incompressible characters: DIVOC's ZIP of its RSA sample
        # (1,088 bytes) does not fit version 25 at level M; the compact payload does
        with pytest.raises(qr.QRError, match=f"payload is {len(payload)} bytes, over the limit"):
            qr.encode(payload)
        return
    matrix = assert_byte_mode_code(payload)
    assert qr.decode_payload(qr.decode_image(qr.matrix_png(matrix))) == certificate


def test_unicode_content_survives(credential: dict[str, Any]) -> None:
    credential["credentialSubject"]["name"] = "Zoë Ñandú 李小龙 भया मित्र"
    for make in PAYLOADS.values():
        payload = make(credential)
        assert qr.decode_payload(qr.decode_image(qr.qr_png(payload))) == credential


def test_random_binary_payloads_are_single_byte_segments() -> None:
    rng = random.Random(6)
    for _ in range(25):
        payload = rng.randbytes(rng.randint(1, qr.MAX_PAYLOAD_BYTES))
        matrix = assert_byte_mode_code(payload)
        assert qr.decode_image(qr.matrix_png(matrix, scale=2)) == payload


def test_png_is_one_bit_with_quiet_zone_and_scale(signed: dict[str, Any]) -> None:
    matrix = qr.encode(qr.compact_payload(signed))
    png = qr.matrix_png(matrix, scale=3)
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "1"
        side = (matrix.size + 2 * qr.QUIET_ZONE) * 3
        assert image.size == (side, side)
        pixels = image.convert("L")
        # the quiet zone is white, the top-left finder's corner is black
        assert pixels.getpixel((3 * qr.QUIET_ZONE - 1, 3 * qr.QUIET_ZONE - 1)) == 255
        assert pixels.getpixel((3 * qr.QUIET_ZONE, 3 * qr.QUIET_ZONE)) == 0
        for y in range(matrix.size):  # every module, sampled at its centre
            for x in range(matrix.size):
                centre = (3 * (x + qr.QUIET_ZONE) + 1, 3 * (y + qr.QUIET_ZONE) + 1)
                assert (pixels.getpixel(centre) == 0) == matrix.is_dark(x, y)


def test_jpeg_photo_like_picture_decodes(signed: dict[str, Any]) -> None:
    payload = qr.divoc_payload(signed)
    with Image.open(io.BytesIO(qr.qr_png(payload, scale=4))) as image:
        canvas = Image.new("L", (image.width + 200, image.height + 120), 180)
        canvas.paste(image.convert("L").rotate(7, expand=True, fillcolor=255), (90, 40))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=80)
    assert qr.decode_payload(qr.decode_image(out.getvalue())) == signed


# -- SVG ------------------------------------------------------------------------------------------


def test_svg_is_well_formed_and_matches_the_matrix(signed: dict[str, Any]) -> None:
    import xml.etree.ElementTree as ET

    payload = qr.compact_payload(signed)
    matrix = qr.encode(payload)
    svg = qr.qr_svg(payload)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    side = matrix.size + 2 * qr.QUIET_ZONE
    assert root.get("viewBox") == f"0 0 {side} {side}"
    path = root.find(f"{ns}path")
    assert path is not None
    dark = {
        (x + qr.QUIET_ZONE, y + qr.QUIET_ZONE)
        for y in range(matrix.size)
        for x in range(matrix.size)
        if matrix.is_dark(x, y)
    }
    painted = set()
    for cmd in path.get("d", "").split("M")[1:]:  # "x yhNv1Hxz"
        x, rest = cmd.split(" ", 1)
        y, rest = rest.split("h", 1)
        run = int(rest.split("v", 1)[0])
        painted |= {(int(x) + k, int(y)) for k in range(run)}
    assert painted == dark


@pytest.mark.browser
def test_svg_rasterised_by_chromium_decodes(signed: dict[str, Any]) -> None:
    payload = qr.divoc_payload(signed)
    svg = qr.qr_svg(payload)
    with running_chromium() as browser:
        page = browser.new_page(viewport={"width": 560, "height": 560})
        page.set_content(f"<html><body style='margin:0'>{svg}</body></html>")
        shot = page.locator("svg").screenshot(type="png")
    assert qr.decode_payload(qr.decode_image(shot)) == signed


# -- refusals -------------------------------------------------------------------------------------


def test_oversize_credential_is_refused_with_its_size(credential: dict[str, Any]) -> None:
    rng = random.Random(1)
    credential["credentialSubject"]["name"] = "".join(
        rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(1500)
    )
    payload = qr.compact_payload(credential)
    with pytest.raises(qr.QRError, match=rf"payload is {len(payload)} bytes, over the limit"):
        qr.qr_png(payload)
    with pytest.raises(qr.QRError, match="over the limit"):
        qr.encode(qr.divoc_payload(credential))


def test_largest_payload_fits_version_25_and_one_more_byte_does_not() -> None:
    payload = os.urandom(qr.MAX_PAYLOAD_BYTES)
    assert assert_byte_mode_code(payload).version == 25
    with pytest.raises(qr.QRError, match=f"{qr.MAX_PAYLOAD_BYTES + 1} bytes"):
        qr.encode(payload + b"x")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, not a payload",
        b"\xff" * 40,
        b'{"a": 1}',
        b"PK\x03\x04 broken zip",
    ],
)
def test_garbage_payloads_are_refused(data: bytes) -> None:
    with pytest.raises(qr.QRError):
        qr.decode_payload(data)


def _zip_of(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


def test_zip_without_certificate_json_is_refused() -> None:
    with pytest.raises(qr.QRError, match=r"no certificate\.json .*other\.json"):
        qr.decode_payload(_zip_of("other.json", b"{}"))


def test_payloads_that_are_not_a_json_object_are_refused() -> None:
    with pytest.raises(qr.QRError, match="not an object"):
        qr.decode_payload(_zip_of("certificate.json", b"[1, 2]"))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    with pytest.raises(qr.QRError, match="does not hold JSON"):
        qr.decode_payload(deflate.compress(b"not json") + deflate.flush())


def test_truncated_and_padded_deflate_is_refused(signed: dict[str, Any]) -> None:
    payload = qr.compact_payload(signed)
    with pytest.raises(qr.QRError, match="truncated"):
        qr.decode_payload(payload[: len(payload) // 2])
    with pytest.raises(qr.QRError, match="after the end"):
        qr.decode_payload(payload + b"extra")


@pytest.mark.parametrize("kind", ["zip", "deflate"])
def test_zip_bombs_are_refused(kind: str) -> None:
    bomb = b"{" + b" " * (10 * 1024 * 1024) + b"}"  # 10 MiB of JSON; compresses to ~10 KB
    if kind == "zip":
        data = _zip_of("certificate.json", bomb)
        with pytest.raises(qr.QRError, match="more than 65536 bytes"):
            qr.decode_payload(data)
        # a header that lies about the size: reading stops at the size it claims, then the
        # CRC check fails; nothing is inflated past it
        lying = data.replace(len(bomb).to_bytes(4, "little"), (100).to_bytes(4, "little"))
        with pytest.raises(qr.QRError, match="Bad CRC-32"):
            qr.decode_payload(lying)
    else:
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        with pytest.raises(qr.QRError, match="inflates to more than 65536 bytes"):
            qr.decode_payload(deflate.compress(bomb) + deflate.flush())


def test_zip_written_as_utf8_text_by_divocs_node_library_is_read(signed: dict[str, Any]) -> None:
    payload = qr.divoc_payload(signed)
    mangled = payload.decode("latin-1").encode("utf-8")
    assert mangled != payload
    assert qr.decode_payload(mangled) == signed


def test_non_bytes_payload_is_refused() -> None:
    with pytest.raises(qr.QRError, match="must be bytes"):
        qr.encode("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", [0, 65])
def test_bad_scale_is_refused(scale: int) -> None:
    with pytest.raises(qr.QRError, match="scale"):
        qr.qr_png(b"x", scale=scale)


def test_pictures_without_a_code_or_not_pictures_are_refused() -> None:
    blank = io.BytesIO()
    Image.new("L", (200, 200), 255).save(blank, "PNG")
    with pytest.raises(qr.QRError, match="no QR code"):
        qr.decode_image(blank.getvalue())
    with pytest.raises(qr.QRError, match="not a readable PNG or JPEG"):
        qr.decode_image(b"GIF89a not really")
    gif = io.BytesIO()
    Image.new("L", (20, 20), 255).save(gif, "GIF")
    with pytest.raises(qr.QRError, match="not a readable PNG or JPEG"):
        qr.decode_image(gif.getvalue())


def test_huge_picture_is_refused_before_decoding() -> None:
    big = io.BytesIO()
    Image.new("1", (8000, 6000), 1).save(big, "PNG")  # small file, 48 megapixels
    with pytest.raises(qr.QRError, match="8000x6000 pixels"):
        qr.decode_image(big.getvalue())
