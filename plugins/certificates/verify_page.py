"""The public certificate verification page, `/verify`: a phone or a desk verifier reads a
certificate's QR code (camera, picture or pasted text) and sees VALID / REVOKED / SUSPENDED /
EXPIRED / INVALID in large type, with the holder's name, dose, vaccine, date and issuer.

- `GET /verify`: the page, in the language of `?lang=`, the `registry_lang` cookie or
  `Accept-Language` (the plugin's catalogs `templates/locales/<locale>.json`, `verify.*` keys);
- `GET /verify/static/<file>`: its scripts, style sheet and the vendored QR decoder (package
  data, never a CDN); `GET /verify/sw.js`: the service worker that keeps the page working
  offline (scope `/verify`);
- `GET /verify/trust.json`: what the page verifies with when the network is gone: the issuers
  it trusts, their Ed25519 and ES256 public keys, the bits of this registry's revocation and
  suspension lists and the SMART Health Card / HCERT revocation and suspension ids, and the
  trust lists of other issuers' cards (keys by `iss` and `kid`, their saved revocation lists)
  and HCERTs (document signers by `kid`) (made at most every `TRUST_TTL` seconds, whoever
  asks);
- `POST /verify/decode-image`: the server's QR reader (`qr.decode_image`) for a picture the
  browser could not read; bounded by `verify_page_max_image_bytes` and
  `verify_page_max_image_pixels` (413 naming the setting) and to PNG / JPEG (415).

Online the page asks `POST /api/v1/verify` for the verdict; when that fails for lack of a
network it verifies in the browser (`static/verify-core.js`) against the cached `trust.json`.
Every route here is public (`PAGE`): it shows nothing a certificate's holder does not already
show by handing over the QR code, and the keys and status bits are public already.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import mimetypes
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from open_registry.core import BadRequest, NotFound
from open_registry.core.api import JSONResponse
from open_registry.core.auth import rules
from open_registry.core.errors import PayloadTooLarge, UnsupportedMediaType
from open_registry.core.i18n import COOKIE, parse_accept_language
from open_registry.plugins.certificates import health_formats, shc, status, suites
from open_registry.plugins.certificates.es256 import b64url, hcert_kid
from open_registry.plugins.certificates.issuance import CERTIFICATE
from open_registry.plugins.certificates.keys import public_multikey
from open_registry.plugins.certificates.runtime import Certificates, runtime

PAGE_PATH = "/verify"
HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
LOCALES = TEMPLATES / "locales"
DEFAULT_LOCALE = "en"
#: seconds one `trust.json` is served before it is made again (anonymous callers cannot make
#: the registry read its status lists more often than this)
TRUST_TTL = 30.0
#: content types the server's QR reader accepts
IMAGE_TYPES = ("image/png", "image/jpeg")

#: the page, its files, its trust bundle and its picture reader: anyone may verify
PAGE = rules.public(
    "the verification page: anyone may verify a certificate; its trust bundle holds public "
    "keys and status bits only, and pictures sent to it are bounded in bytes and pixels"
)

#: the page's own policy: the global one (web_security.PAGE_CSP) plus `blob:` pictures (an
#: uploaded picture is shown from a blob URL) and the service worker from this origin
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; worker-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: the camera for this origin only, nothing else a page could ask for
PERMISSIONS_POLICY = "camera=(self), microphone=(), geolocation=(), payment=(), usb=()"


# -- files ----------------------------------------------------------------------------------------


def static_files() -> dict[str, Path]:
    """Every file the page may load: `verify.js` -> its path, `vendor/jsQR.js` -> ..."""
    return {
        p.relative_to(STATIC).as_posix(): p
        for p in sorted(STATIC.rglob("*"))
        if p.is_file() and p.name != "sw.js" and not p.name.startswith(".")
    }


@lru_cache(maxsize=1)
def assets_version() -> str:
    """A short hash of every file of the page: asset URLs and the offline cache carry it, so
    a new release replaces what browsers cached."""
    digest = hashlib.sha256()
    for name, path in static_files().items():
        digest.update(name.encode() + b"\0" + path.read_bytes())
    digest.update((TEMPLATES / "verify.html").read_bytes())
    for path in sorted(LOCALES.glob("*.json")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _content_type(name: str) -> str:
    if name.endswith(".js"):
        return "text/javascript; charset=utf-8"
    if name.endswith(".css"):
        return "text/css; charset=utf-8"
    if name.endswith((".md", "LICENSE")) or "." not in name.rsplit("/", 1)[-1]:
        return "text/plain; charset=utf-8"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


# -- language -------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def catalog(locale: str) -> dict[str, str]:
    """The plugin's labels for `locale`, English filling the gaps."""
    english = json.loads((LOCALES / f"{DEFAULT_LOCALE}.json").read_text(encoding="utf-8"))
    if locale == DEFAULT_LOCALE:
        return dict(english)
    own = json.loads((LOCALES / f"{locale}.json").read_text(encoding="utf-8"))
    return {**english, **own}


def locales() -> tuple[str, ...]:
    """The page's languages: the catalogs shipped with the plugin, English first."""
    found = sorted(p.stem for p in LOCALES.glob("*.json"))
    return tuple(sorted(found, key=lambda k: (k != DEFAULT_LOCALE, k)))


def negotiate(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The page's language: `?lang=`, then the UI's language cookie, then `Accept-Language`
    (`hi-IN` is `hi`), then English; the same order as the registry's own pages."""
    known = locales()

    def match(tag: str) -> str | None:
        tag = tag.strip().lower()
        base = tag.split("-")[0].split("_")[0]
        return tag if tag in known else base if base in known else None

    for candidate in (query, cookie):
        if candidate and match(candidate):
            return match(candidate) or DEFAULT_LOCALE
    for tag in parse_accept_language(accept_language or ""):
        found = match(tag)
        if found:
            return found
    return DEFAULT_LOCALE


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string((TEMPLATES / "verify.html").read_text(encoding="utf-8"))


def _json_for_html(value: Any) -> str:
    """JSON safe inside a `<script type="application/json">` block (no `</script>`)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(rt: Certificates, locale: str) -> str:
    """The page's HTML in `locale`."""
    labels = catalog(locale)
    version = assets_version()
    messages = {k.removeprefix("verify."): v for k, v in labels.items() if k.startswith("verify.")}
    data = {
        "locale": locale,
        "version": version,
        "maxCacheAge": rt.config.verify_page_max_cache_age,
        "maxImageBytes": rt.config.verify_page_max_image_bytes,
        "maxText": rt.config.max_verify_text,
        "messages": messages,
        "urls": {
            "verify": "/api/v1/verify",
            "trust": f"{PAGE_PATH}/trust.json",
            "decodeImage": f"{PAGE_PATH}/decode-image",
            "worker": f"{PAGE_PATH}/sw.js?v={version}",
            "scope": PAGE_PATH,
        },
        "assets": [f"{PAGE_PATH}/static/{name}?v={version}" for name in _cached_assets()],
    }
    languages = [(code, catalog(code).get("verify.language", code)) for code in locales()]
    return _template().render(
        t=lambda key: labels.get(f"verify.{key}", key),
        locale=locale,
        languages=languages,
        version=version,
        data=_json_for_html(data),
    )


def _cached_assets() -> list[str]:
    """The files the page loads (and keeps for offline use): scripts, style, decoder."""
    return [n for n in static_files() if n.endswith((".js", ".css"))]


# -- the trust bundle -----------------------------------------------------------------------------


def _suspended_ids(rt: Certificates) -> list[str]:
    """Ids of the certificates suspended now (their cards and HCERTs carry only the id)."""
    table = rt.registry.services[CERTIFICATE].table
    now = datetime.now(UTC)
    stmt = (
        sa.select(table.c.id)
        .where(
            table.c.status == "suspended",
            table.c._deleted_at.is_(None),
            sa.or_(table.c.suspendedUntil.is_(None), table.c.suspendedUntil > now),
        )
        .order_by(table.c.id)
    )
    with rt.registry.db.engine.connect() as conn:
        return [str(row[0]) for row in conn.execute(stmt)]


def _list_count(rt: Certificates) -> int:
    """How many status lists this registry's certificates use (one per `LIST_SIZE` indices)."""
    table = rt.registry.services[CERTIFICATE].table
    with rt.registry.db.engine.connect() as conn:
        top = conn.execute(sa.select(sa.func.max(table.c.statusIndex))).scalar()
    return 0 if top is None else int(top) // status.LIST_SIZE + 1


def _rids(ids: list[str]) -> list[str]:
    out = []
    for certificate_id in ids:
        try:
            out.append(shc.rid_of(certificate_id))
        except ValueError:  # not a UUID: no card or HCERT was made of it
            continue
    return out


def trust_bundle(rt: Certificates) -> dict[str, Any]:
    """What the page needs to verify offline (all of it public): trusted issuers, their keys,
    status list bits, and the ids of revoked and suspended certificates (for SMART Health
    Cards and HCERTs, which carry no status list entry)."""
    keys = rt.keys
    methods: dict[str, dict[str, Any]] = {}
    document = keys.did_document()
    for vm in (document or {}).get("verificationMethod", []):
        methods[vm["id"]] = {
            "publicKeyMultibase": vm["publicKeyMultibase"],
            "controller": vm["controller"],
        }
    # keys of other trusted issuers (trust_dir): the Ed25519 ones can be checked in a browser
    for method, resolved in rt.trust.methods.items():
        for key in resolved.candidates(Ed25519PublicKey):
            assert isinstance(key.public_key, Ed25519PublicKey)
            methods.setdefault(
                method,
                {
                    "publicKeyMultibase": public_multikey(key.public_key),
                    "controller": key.controller,
                },
            )
    lists: dict[str, str] = {}
    for number in range(_list_count(rt)):
        for purpose in status.PURPOSES:
            url = status.list_url(rt.config.api_base, purpose, number)
            lists[url] = status.encode_bits(rt.list_bits(purpose, number))
    for url, doc in rt.trust.status_lists.items():  # other issuers' lists saved in trust_dir
        if suites.verify(doc, rt.trust.resolve).verified:
            encoded = doc.get("credentialSubject", {}).get("encodedList")
            if isinstance(encoded, str):
                lists.setdefault(url, encoded)
    es256 = []
    jwks = {k["kid"]: k for k in rt.ec_keys.jwks()["keys"]}
    for kid, public in rt.ec_keys.public_keys().items():
        jwk = jwks[kid]
        es256.append(
            {
                "kid": kid,
                "kty": "EC",
                "crv": "P-256",
                "x": jwk["x"],
                "y": jwk["y"],
                "hcertKid": b64url(hcert_kid(public)),
            }
        )
    revoked: list[str] = []
    if es256:
        revoked = health_formats.revocation_list(rt, es256[0]["kid"])["rids"]
    return {
        "generatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "issuerName": rt.config.issuer_name or rt.registry.settings.title,
        "issuers": sorted(keys.issuers() | rt.trust.extra_issuers),
        "ownIssuers": sorted(keys.issuers()),
        "methods": methods,
        "statusLists": lists,
        "cardIssuer": rt.config.base_url.rstrip("/"),
        "es256": es256,
        "revokedIds": revoked,
        "suspendedIds": _rids(_suspended_ids(rt)),
        # other issuers' SMART Health Card keys (with their saved revocation lists) and EU DCC
        # document signers, from trust_dir's shc/ and dcc/ (trust_lists.py)
        **rt.trust.lists.bundle(),
    }


class _Cached:
    """One value made at most every `ttl` seconds, by one thread at a time."""

    def __init__(self, make: Callable[[], bytes], ttl: float):
        self.make, self.ttl = make, ttl
        self.value: tuple[float, bytes] | None = None
        self.lock = threading.Lock()

    def get(self) -> bytes:
        with self.lock:
            now = time.monotonic()
            if self.value is None or now - self.value[0] > self.ttl:
                self.value = (now, self.make())
            return self.value[1]


# -- the picture reader ---------------------------------------------------------------------------


def decode_picture(data: bytes, max_pixels: int) -> dict[str, str]:
    """The QR payload of a PNG or JPEG picture: `{"text": ...}` for a text code (`shc:/`,
    `HC1:`), `{"qr": base64}` for our binary ones; `BadRequest` naming what is wrong."""
    from open_registry.plugins.certificates.qr import QRError, decode_image

    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
            width, height = image.size  # read from the header: nothing is decoded yet
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRequest(
            f"the picture is not a readable PNG or JPEG image: {exc}",
            errors=[{"pointer": "", "message": "not a PNG or JPEG image", "keyword": "format"}],
        ) from None
    if width * height > max_pixels:
        message = (
            f"the picture is {width}x{height} pixels, more than {max_pixels} "
            "(limit verify_page_max_image_pixels): scale it down"
        )
        raise PayloadTooLarge(
            message,
            errors=[{"pointer": "", "message": message, "keyword": "verify_page_max_image_pixels"}],
        )
    try:
        payload = decode_image(data)
    except QRError as exc:
        raise BadRequest(
            str(exc), errors=[{"pointer": "", "message": str(exc), "keyword": "qr"}]
        ) from None
    text = _as_text(payload)
    if text is not None:
        return {"text": text}
    return {"qr": base64.b64encode(payload).decode("ascii")}


def _as_text(payload: bytes) -> str | None:
    """A SMART Health Card or HCERT QR's text; None for binary payloads (ZIP, raw deflate)."""
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.startswith(("shc:/", "HC1:")) else None


async def _read_image(request: Request, limit: int) -> bytes:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in IMAGE_TYPES:
        raise UnsupportedMediaType(
            f"send the picture as {' or '.join(IMAGE_TYPES)} (got {ctype or 'no content type'})"
        )
    message = f"the picture is larger than {limit} bytes (limit verify_page_max_image_bytes)"
    too_large = PayloadTooLarge(
        message,
        errors=[{"pointer": "", "message": message, "keyword": "verify_page_max_image_bytes"}],
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk
        if len(buffer) > limit:
            raise too_large
    if not buffer:
        raise BadRequest(
            "send a PNG or JPEG picture as the body",
            errors=[{"pointer": "", "message": "the body is empty", "keyword": "required"}],
        )
    return bytes(buffer)


# -- routes ---------------------------------------------------------------------------------------


def verify_page_routes(registry: Any) -> list[APIRouter]:
    """The page's routes (all public, none in the OpenAPI document: they are the page's own)."""
    router = APIRouter(include_in_schema=False)
    files = static_files()

    def certs() -> Certificates:
        return runtime(registry)

    bundle = _Cached(lambda: json.dumps(trust_bundle(certs())).encode(), TRUST_TTL)

    @router.get(
        PAGE_PATH, summary="The certificate verification page", dependencies=[Depends(PAGE)]
    )
    async def page(request: Request, lang: str | None = None) -> Response:
        locale = negotiate(
            lang, request.cookies.get(COOKIE), request.headers.get("accept-language")
        )
        html = await run_in_threadpool(render_page, certs(), locale)
        headers = {
            "Content-Security-Policy": PAGE_CSP,
            "Permissions-Policy": PERMISSIONS_POLICY,
            "Cache-Control": "no-cache",
            "Content-Language": locale,
            "Vary": "Accept-Language, Cookie",
        }
        return HTMLResponse(html, headers=headers)

    @router.get(
        f"{PAGE_PATH}/static/{{name:path}}",
        summary="A file of the verification page",
        dependencies=[Depends(PAGE)],
    )
    async def asset(name: str) -> Response:
        path = files.get(name)
        if path is None:
            raise NotFound(f"the verification page has no file {name[:80]!r}")
        return Response(
            path.read_bytes(),
            media_type=_content_type(name),
            headers={"Cache-Control": "public, max-age=3600"},
        )

    @router.get(
        f"{PAGE_PATH}/sw.js",
        summary="The verification page's service worker",
        dependencies=[Depends(PAGE)],
    )
    async def service_worker() -> Response:
        version = assets_version()
        head = f"const VERSION = {json.dumps(version)};\nconst SCOPE = {json.dumps(PAGE_PATH)};\n"
        body = head + (STATIC / "sw.js").read_text(encoding="utf-8")
        headers = {"Service-Worker-Allowed": PAGE_PATH, "Cache-Control": "no-cache"}
        return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)

    @router.get(
        f"{PAGE_PATH}/trust.json",
        summary="The keys and status bits the verification page verifies with offline",
        dependencies=[Depends(PAGE)],
    )
    async def trust() -> Response:
        body = await run_in_threadpool(bundle.get)
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-cache"})

    @router.post(
        f"{PAGE_PATH}/decode-image",
        summary="Read the QR code of a picture (PNG or JPEG) for the verification page",
        dependencies=[Depends(PAGE)],
    )
    async def decode_image(request: Request) -> Response:
        config = certs().config
        data = await _read_image(request, config.verify_page_max_image_bytes)
        found = await run_in_threadpool(decode_picture, data, config.verify_page_max_image_pixels)
        return JSONResponse(found)

    return [router]


__all__ = [
    "PAGE",
    "PAGE_PATH",
    "assets_version",
    "catalog",
    "decode_picture",
    "negotiate",
    "render_page",
    "trust_bundle",
    "verify_page_routes",
]
