"""QR codes for certificates: the two payloads, encoding, PNG and SVG output, and reading.

Payloads (what the QR code carries):

- DIVOC-compatible (`divoc_payload`): a ZIP archive (deflate) holding one `certificate.json`,
  the credential as compact JSON, as DIVOC's verifier app expects;
- compact (`compact_payload`): the same JSON as raw deflate (no header, `wbits=-15`, level 9).

`decode_payload` tells them apart by the ZIP magic `PK\\x03\\x04` and refuses anything else,
and anything that inflates past `MAX_INFLATED` bytes.

Encoding is done by zint (through zxing-cpp's `create_barcode`): byte mode, no ECI header,
error correction level M, the smallest version that fits, never above `MAX_VERSION`. It picks
the mask the standard way (penalty scores) in C, about 2.5 ms for a version 25 code, where
segno needs 35-50 ms with its automatic mask and 8-10 ms with a fixed one
(`benchmarks/render.py` measures all three). PNG (1 bit per pixel) and SVG (one path) are
written here from the module matrix.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
import zxingcpp
from PIL import Image, UnidentifiedImageError

#: the largest QR version we produce (117 x 117 modules): bigger codes scan badly from paper
MAX_VERSION = 25
#: error correction level: M restores about 15% of damaged codewords
EC_LEVEL = "M"
#: bytes that fit a version 25 code at level M in byte mode: 1,000 data codewords less the
#: 4-bit mode indicator and 16-bit character count (ISO/IEC 18004 table 7)
MAX_PAYLOAD_BYTES = 997
#: the most a payload may inflate to; a certificate is about 1-3 KB of JSON
MAX_INFLATED = 64 * 1024
#: the largest picture `decode_image` opens (pixels), against decompression bombs
MAX_IMAGE_PIXELS = 40_000_000
#: the file inside DIVOC's ZIP payload
ZIP_ENTRY = "certificate.json"
#: quiet zone around a code, in modules (ISO/IEC 18004 asks for 4)
QUIET_ZONE = 4

_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so a credential always gives the same payload
_DARK = bytes([1] + [0] * 255)  # zxing-cpp bitmaps: 0 = dark module, 255 = light
_TO_PNG_BITS = bytes.maketrans(b"\x00\x01", b"10")  # 1-bit greyscale: 1 = white, 0 = black
_RUNS = re.compile(rb"\x01+")


class QRError(ValueError):
    """A payload or picture that cannot be made into, or read from, a certificate QR code."""


@dataclass(frozen=True, slots=True)
class QRMatrix:
    """A QR code's modules, without quiet zone: `modules[y * size + x]` is 1 for dark."""

    version: int
    size: int
    modules: bytes
    ec_level: str = EC_LEVEL

    def row(self, y: int) -> bytes:
        """The modules of row `y` (0 at the top), one byte each, 1 = dark."""
        return self.modules[y * self.size : (y + 1) * self.size]

    def is_dark(self, x: int, y: int) -> bool:
        return self.modules[y * self.size + x] == 1


# -- payloads -------------------------------------------------------------------------------------


def compact_json(credential: dict[str, Any]) -> bytes:
    """The credential as compact UTF-8 JSON (no spaces, keys in their order)."""
    try:
        return orjson.dumps(credential)
    except TypeError as exc:
        raise QRError(f"the credential cannot be written as JSON: {exc}") from exc


def divoc_payload(credential: dict[str, Any]) -> bytes:
    """A ZIP archive (deflate, level 9) holding `certificate.json`: DIVOC's QR payload."""
    info = zipfile.ZipInfo(ZIP_ENTRY, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, compact_json(credential), compresslevel=9)
    return buffer.getvalue()


def compact_payload(credential: dict[str, Any]) -> bytes:
    """Raw deflate (no zlib header, `wbits=-15`, level 9) of the credential's compact JSON."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(compact_json(credential)) + compressor.flush()


def _inflate_raw(data: bytes) -> bytes:
    inflater = zlib.decompressobj(-15)
    try:
        text = inflater.decompress(data, MAX_INFLATED + 1)
    except zlib.error as exc:
        raise QRError(
            f"the QR payload is neither a ZIP holding certificate.json nor raw deflate data ({exc})"
        ) from exc
    if len(text) > MAX_INFLATED:
        raise QRError(f"the QR payload inflates to more than {MAX_INFLATED} bytes")
    if not inflater.eof:
        raise QRError("the QR payload's deflate data is truncated")
    if inflater.unused_data:
        raise QRError("the QR payload has bytes after the end of its deflate data")
    return text


def _unzip(data: bytes) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            try:
                info = archive.getinfo(ZIP_ENTRY)
            except KeyError:
                names = ", ".join(archive.namelist()[:5]) or "nothing"
                raise QRError(
                    f"the QR payload's ZIP holds no {ZIP_ENTRY} (it holds {names})"
                ) from None
            if info.file_size > MAX_INFLATED:
                raise QRError(f"the QR payload's {ZIP_ENTRY} is more than {MAX_INFLATED} bytes")
            with archive.open(info) as member:
                text = member.read(MAX_INFLATED + 1)
    except QRError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: encrypted member; NotImplementedError: unsupported compression
        raise QRError(f"the QR payload is not a readable ZIP archive: {exc}") from exc
    if len(text) > MAX_INFLATED:
        raise QRError(f"the QR payload's {ZIP_ENTRY} inflates to more than {MAX_INFLATED} bytes")
    return text


def _undo_text_mangling(data: bytes) -> bytes | None:
    """DIVOC's Node QR library wrote the ZIP bytes as UTF-8 text (each byte one character);
    the original bytes, or None when `data` is not such text."""
    try:
        return data.decode("utf-8").encode("latin-1")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return None


def decode_payload(data: bytes) -> dict[str, Any]:
    """The credential in a QR payload of either kind; `QRError` for anything else."""
    if data.startswith(_ZIP_MAGIC):
        try:
            text = _unzip(data)
        except QRError:
            original = _undo_text_mangling(data)
            if original is None or original == data:
                raise
            text = _unzip(original)
    else:
        text = _inflate_raw(data)
    try:
        credential = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise QRError(f"the QR payload does not hold JSON: {exc}") from exc
    if not isinstance(credential, dict):
        raise QRError("the QR payload's JSON is not an object (a credential)")
    return credential


# -- encoding -------------------------------------------------------------------------------------


def encode(payload: bytes) -> QRMatrix:
    """The QR code of `payload`: byte mode, level M, at most version `MAX_VERSION`."""
    if not isinstance(payload, bytes | bytearray):
        raise QRError(f"a QR payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise QRError(
            f"the QR payload is {len(payload)} bytes, over the limit of {MAX_PAYLOAD_BYTES} "
            f"bytes (QR version {MAX_VERSION} at error correction level {EC_LEVEL})"
        )
    # eci=0: no ECI header (zint's default for bytes is ECI 899, "binary"), so every decoder
    # returns the bytes as they are
    barcode = zxingcpp.create_barcode(
        bytes(payload), zxingcpp.BarcodeFormat.QRCode, ec_level=EC_LEVEL, eci=0
    )
    bitmap = barcode.to_image(scale=1, add_quiet_zones=False)
    size = bitmap.shape[0]
    version = (size - 17) // 4
    if version > MAX_VERSION:  # the byte limit above should make this impossible
        raise QRError(f"the QR payload of {len(payload)} bytes needs QR version {version}")
    # zxingcpp.Image supports the buffer protocol, which its stubs do not declare
    modules = bytes(memoryview(bitmap)).translate(_DARK)  # type: ignore[arg-type]
    return QRMatrix(version=version, size=size, modules=modules)


def encode_text(text: str, *, ec_level: str = "L", max_version: int = 40) -> QRMatrix:
    """The QR code of a text payload (`shc:/...`, `HC1:...`): zint picks the densest modes
    (numeric for a SMART Health Card's digits, alphanumeric for base45), no ECI header."""
    if not text.isascii():
        raise QRError("a text QR payload must be ASCII")
    try:
        barcode = zxingcpp.create_barcode(
            text, zxingcpp.BarcodeFormat.QRCode, ec_level=ec_level, eci=0
        )
    except Exception as exc:  # zint refuses data beyond version 40
        raise QRError(f"the text does not fit a QR code: {exc}") from None
    bitmap = barcode.to_image(scale=1, add_quiet_zones=False)
    size = bitmap.shape[0]
    version = (size - 17) // 4
    if version > max_version:
        raise QRError(
            f"the text of {len(text)} characters needs QR version {version}, over the limit of "
            f"{max_version} at error correction level {ec_level}"
        )
    # zxingcpp.Image supports the buffer protocol, which its stubs do not declare
    modules = bytes(memoryview(bitmap)).translate(_DARK)  # type: ignore[arg-type]
    return QRMatrix(version=version, size=size, modules=modules, ec_level=ec_level)


# -- PNG and SVG ----------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def matrix_png(matrix: QRMatrix, *, scale: int = 4, border: int = QUIET_ZONE) -> bytes:
    """A 1-bit greyscale PNG of `matrix`, `scale` pixels per module, `border` modules of
    quiet zone."""
    if not 1 <= scale <= 64:
        raise QRError(f"scale must be 1-64 pixels per module, got {scale}")
    if not 0 <= border <= 16:
        raise QRError(f"border must be 0-16 modules, got {border}")
    side = (matrix.size + 2 * border) * scale
    row_bytes = (side + 7) // 8
    pad = b"1" * (row_bytes * 8 - side)  # bits after the last pixel of a row

    def pixel_row(bits: bytes) -> bytes:  # b"0"/b"1" per module -> filter byte + packed pixels
        wide = bits.replace(b"0", b"0" * scale).replace(b"1", b"1" * scale) if scale > 1 else bits
        return b"\x00" + int(wide + pad, 2).to_bytes(row_bytes, "big")

    # each module row is `scale` equal pixel rows: the first written as is (filter 0), the
    # others as "same as above" (filter 2, all zero bytes), which deflate packs to nothing
    same = (b"\x02" + bytes(row_bytes)) * (scale - 1)
    edge = b"1" * border
    blank = pixel_row(b"1" * (matrix.size + 2 * border)) + same
    rows = [blank * border]
    for y in range(matrix.size):
        rows.append(pixel_row(edge + matrix.row(y).translate(_TO_PNG_BITS) + edge))
        rows.append(same)
    rows.append(blank * border)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 1)),
            _png_chunk(b"IEND", b""),
        )
    )


def matrix_svg(matrix: QRMatrix, *, border: int = QUIET_ZONE, module_px: int = 4) -> str:
    """An SVG of `matrix`: a white square and one black path of horizontal runs, in module
    units (`module_px` sets the default display size)."""
    side = matrix.size + 2 * border
    parts = []
    for y in range(matrix.size):
        for run in _RUNS.finditer(matrix.row(y)):
            x = run.start() + border
            parts.append(f"M{x} {y + border}h{run.end() - run.start()}v1H{x}z")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}" '
        f'width="{side * module_px}" height="{side * module_px}" shape-rendering="crispEdges">'
        f'<rect width="{side}" height="{side}" fill="#fff"/>'
        f'<path fill="#000" d="{"".join(parts)}"/></svg>'
    )


def qr_png(payload: bytes, *, scale: int = 4, border: int = QUIET_ZONE) -> bytes:
    """A PNG of the QR code of `payload` (see `encode` and `matrix_png`)."""
    return matrix_png(encode(payload), scale=scale, border=border)


def qr_svg(payload: bytes, *, border: int = QUIET_ZONE) -> str:
    """An SVG of the QR code of `payload` (see `encode` and `matrix_svg`)."""
    return matrix_svg(encode(payload), border=border)


# -- reading --------------------------------------------------------------------------------------


def decode_image(image_bytes: bytes) -> bytes:
    """The raw payload bytes of the first QR code in a PNG or JPEG picture."""
    try:
        with Image.open(io.BytesIO(image_bytes), formats=("PNG", "JPEG")) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise QRError(
                    f"the picture is {width}x{height} pixels, more than {MAX_IMAGE_PIXELS} "
                    "pixels: scale it down"
                )
            grey = image.convert("L")
    except QRError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise QRError(f"the picture is not a readable PNG or JPEG image: {exc}") from exc
    # the binding converts a BarcodeFormat to BarcodeFormats; its stubs accept only the latter
    found = zxingcpp.read_barcodes(grey, formats=zxingcpp.BarcodeFormat.QRCode)  # type: ignore[arg-type]
    if not found:
        raise QRError("no QR code was found in the picture")
    # `bytes` is the symbol's content as encoded (no text decoding), so ZIP bytes survive
    return found[0].bytes
