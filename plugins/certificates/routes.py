"""HTTP routes of the certificates plugin.

- `GET /api/v1/certificates/{id}`: the signed credential as JSON-LD; with `Accept: image/png`,
  `image/svg+xml` or `application/pdf` (or `?format=png|svg|pdf`) its QR code or PDF, rendered on
  demand and cached (`?payload=divoc|compact` picks the QR payload, `?lang=` the PDF language);
- `POST /api/v1/certificates/{id}/revoke|suspend|reinstate|correct`: the lifecycle;
- `GET /api/v1/status-lists/{purpose}/{n}`: our signed Bitstring Status List credentials;
- `POST /api/v1/verify`: VALID / REVOKED / SUSPENDED / EXPIRED / INVALID with the reason;
- `POST /credentials/issue`, `POST /credentials/verify`: the VC-API (VCALM) endpoints;
  both verify endpoints are anonymous, so their bodies are bounded before any JSON-LD work
  (`limits.py`: size, nesting, values, array length, blank nodes, QR text);
- `GET /.well-known/did.json`: the issuer's DID document (did:web issuers);
- `GET /.well-known/jwks.json`, `GET /.well-known/crl/{kid}.json`: the ES256 keys (with
  `crlVersion`) and each key's SMART Health Card revocation list, with CORS (`OPTIONS` too).

Who may use each route is declared as a `Rule` (`registry.auth.rules`): a certificate and every
output of it (JSON-LD, QR, PDF, SMART Health Card, HCERT, DDCC bundle) follow the certificate
entity's read rules and are read through the caller's gate (`registry.records(principal)`:
401 anonymous, 404 outside the caller's scope), before any cached render is looked up; what a
format needs beyond the certificate is read as `system("certificates")` only after that.
The lifecycle is for `LIFECYCLE_ROLES` within their facility, a correction for whoever may
update the vaccination; the status lists, keys, DID document and verify endpoints are public.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock
from typing import Any, Literal, overload

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from open_registry.core import BadRequest, Forbidden, Gate, Invalid, NotFound, principal_of
from open_registry.core.api import JSONResponse, read_json
from open_registry.core.auth import rules
from open_registry.plugins.certificates import health_formats, shortcut, status, suites
from open_registry.plugins.certificates.issuance import CERTIFICATE, VACCINATION, now_iso
from open_registry.plugins.certificates.jsonld import JsonLdProcessingError
from open_registry.plugins.certificates.limits import (
    SETTINGS,
    LimitExceeded,
    VerifyLimits,
    check_document,
    check_size,
    check_text,
    read_body,
)
from open_registry.plugins.certificates.loader import UnknownContextError
from open_registry.plugins.certificates.results import SigningError
from open_registry.plugins.certificates.runtime import Certificates, runtime
from open_registry.plugins.certificates.status import PURPOSES
from open_registry.plugins.certificates.verifier import VALID, Verdict, subject_problem

LD_JSON = "application/ld+json"
#: who may revoke, suspend and reinstate: administrators, and a facility's admin for the
#: certificates that facility issued (the certificate's facility owner path)
LIFECYCLE_ROLES = ("system-admin", "facility-admin")
#: the VC-API's issue endpoint signs anything as this issuer: administrators, or API clients
#: given this scope (`registry client add --scope vc:issue`)
ISSUE_SCOPE = "vc:issue"
FORMATS = {"json": LD_JSON, "png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}

#: a certificate and its outputs: the certificate entity's read rules (the recipient's own,
#: the issuing facility's staff, administrators, monitoring); outside the caller's scope: 404
READ = rules.entity(CERTIFICATE, "read", record="certificate_id")
#: revoke, suspend, reinstate: the lifecycle roles (a facility admin: their facility's only)
LIFECYCLE = rules.roles(*LIFECYCLE_ROLES)
#: a correction changes the vaccination (the certificate is then read through the caller's gate)
CORRECT = rules.entity(VACCINATION, "update")
#: `/credentials/issue`: system-admin OR a client with `vc:issue`, which no rule form expresses
#: (roles are not scopes): any signed-in caller passes the rule, the handler checks the rest
ISSUE = rules.SIGNED_IN
#: what verifiers fetch: signed status lists, our public keys, the issuer's DID document
FOR_VERIFIERS = rules.public(
    "what verifiers fetch to check a certificate: public keys and signed status bits only"
)
#: the verify endpoints: anyone may verify; bodies are bounded before any work (limits.py)
VERIFY = rules.public("anyone may verify a certificate; bodies are bounded by limits.py")


#: what verifiers in a browser page of another origin may read (the SMART Health Cards
#: framework requires CORS on `/.well-known/jwks.json`): public keys and revocation lists only
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "max-age=60"}


def _preflight(request: Request) -> Response:
    """The answer to a CORS preflight (`OPTIONS`) of a public, read-only resource."""
    headers = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
        "Access-Control-Max-Age": "86400",
    }
    asked = request.headers.get("access-control-request-headers", "")
    names = [n.strip() for n in asked.split(",") if re.fullmatch(r"\s*[A-Za-z0-9-]{1,64}\s*", n)]
    if names:  # no credentials are involved: whatever headers a plain GET may carry
        headers["Access-Control-Allow-Headers"] = ", ".join(names[:20])
    return Response(status_code=204, headers=headers)


class _Renders:
    """A small LRU of rendered QR codes and PDFs, keyed by certificate id, version and kind."""

    def __init__(self, size: int = 512):
        self.size = size
        self.items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self.lock = Lock()

    def get(self, key: tuple[Any, ...], make: Any) -> bytes:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


def _actor(request: Request) -> str | None:
    return principal_of(request).actor


def _format(request: Request, asked: str | None) -> str:
    if asked:
        if asked not in FORMATS:
            raise BadRequest(f"format must be one of {', '.join(FORMATS)}, not {asked!r}")
        return asked
    accept = request.headers.get("accept", "")
    for name, media in FORMATS.items():
        if name != "json" and media in accept:
            return name
    return "json"


@overload
def _text(body: Any, name: str, *, required: Literal[True] = True, limit: int = 500) -> str: ...
@overload
def _text(body: Any, name: str, *, required: bool, limit: int = 500) -> str | None: ...
def _text(body: Any, name: str, *, required: bool = True, limit: int = 500) -> str | None:
    value = body.get(name) if isinstance(body, dict) else None
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise Invalid(
            "1 field failed validation",
            errors=[
                {
                    "pointer": f"/{name}",
                    "message": f"{name} is required: text of 1 to {limit} characters",
                    "keyword": "required" if value is None else "type",
                }
            ],
        )
    return value.strip()


def _credential_from(body: Any, limits: VerifyLimits) -> Any:
    """A credential from a verify body: the credential itself, `{credential|verifiableCredential}`
    or `{"qr": "<base64 of the QR payload>"}` (bounded: the base64 text by `max_verify_text`,
    what it inflates to by `max_verify_bytes` and the other limits)."""
    if not isinstance(body, dict):
        raise BadRequest("send the credential as a JSON object")
    for key in ("verifiableCredential", "credential"):
        if key in body:
            return body[key]
    if "qr" in body:
        from open_registry.plugins.certificates.qr import QRError, decode_payload

        text = str(body["qr"])
        try:
            check_text(text, limits)
            credential = decode_payload(base64.b64decode(text, validate=True))
            check_size(orjson.dumps(credential), limits)
            check_document(credential, limits)
        except LimitExceeded as exc:
            exc.pointer = "/qr" + exc.pointer
            raise exc.http_error() from None
        except (QRError, binascii.Error, ValueError) as exc:
            raise Invalid(
                "the QR payload cannot be read",
                errors=[{"pointer": "/qr", "message": str(exc), "keyword": "format"}],
            ) from None
        return credential
    return body


async def _bounded(work: Callable[..., Verdict], *args: Any) -> Verdict:
    """`work(*args)` in the thread pool; a document too deep for a recursive step (pyld, JSON
    decoding of a card) is a 400, not a 500."""
    try:
        return await run_in_threadpool(work, *args)
    except RecursionError:
        raise LimitExceeded(
            "the document nests too deeply to process", setting=SETTINGS["max_depth"]
        ).http_error() from None


def certificate_routes(registry: Any) -> list[APIRouter]:  # noqa: C901
    router = APIRouter(tags=["certificates"])
    renders = _Renders()

    def certs() -> Certificates:
        return runtime(registry)

    def gate(request: Request, entity: str = CERTIFICATE) -> Gate:
        """`entity`'s records as the caller may read and write them (`registry.gate`)."""
        return registry.records(principal_of(request))[entity]

    def readable(request: Request, certificate_id: str) -> dict[str, Any]:
        """The certificate, if the caller may read it (the certificate entity's read rules: the
        recipient's own, the issuing facility's staff, administrators and monitoring): 401
        anonymous, 404 outside the caller's scope. Every output starts here."""
        return gate(request).get(certificate_id)

    def lifecycle(request: Request, certificate_id: str, what: str) -> None:
        """Refuse callers who may not change this certificate's status (a role of
        `LIFECYCLE_ROLES`, on the certificates of their facility: 404 outside it)."""
        g = gate(request)
        scope = g.access.require_roles(g.principal, LIFECYCLE_ROLES, what)
        if scope is not None:
            g.service.get(certificate_id, scope=scope)

    def _qr_response(key: tuple[Any, ...], fmt: str, qr_payload: Any) -> Response:
        from open_registry.plugins.certificates import qr

        if fmt == "png":
            return Response(
                renders.get(key, lambda: qr.qr_png(qr_payload())), media_type="image/png"
            )
        svg = renders.get(key, lambda: qr.qr_svg(qr_payload()).encode())
        return Response(svg, media_type="image/svg+xml")

    def render(rec: dict[str, Any], fmt: str, payload: str, lang: str) -> Response:
        credential = rec["credential"]
        if fmt == "json":
            return JSONResponse(credential, media_type=LD_JSON)
        from open_registry.plugins.certificates import qr

        if payload not in ("divoc", "compact"):
            raise BadRequest(f"payload must be divoc or compact, not {payload!r}")

        def qr_payload() -> bytes:
            return (qr.divoc_payload if payload == "divoc" else qr.compact_payload)(credential)

        key = (rec["id"], rec["_version"], fmt, payload, lang)
        if fmt in ("png", "svg"):
            try:
                return _qr_response(key, fmt, qr_payload)
            except qr.QRError as exc:
                hint = " (try ?payload=compact)" if payload == "divoc" else ""
                raise Invalid(
                    f"the certificate does not fit a QR code: {exc}{hint}",
                    errors=[{"pointer": "", "message": str(exc), "keyword": "maxLength"}],
                ) from None
        from open_registry.plugins.certificates import pdf

        def make_pdf() -> bytes:
            try:
                png = renders.get(
                    (rec["id"], rec["_version"], "png", payload, ""),
                    lambda: qr.qr_png(qr_payload()),
                )
            except qr.QRError:  # too big for the DIVOC zip: the compact payload still fits
                png = qr.qr_png(qr.compact_payload(credential))
            config = certs().config
            return pdf.render_pdf(
                credential,
                locale=lang,
                qr_png=png,
                template_path=config.pdf_template,
                fonts=config.pdf_fonts,
                locales_dir=config.pdf_locales_dir,
            )

        try:
            body = renders.get(key, make_pdf)
        except pdf.PdfError as exc:
            raise BadRequest(str(exc)) from None
        headers = {"Content-Disposition": f'inline; filename="certificate-{rec["id"]}.pdf"'}
        return Response(body, media_type="application/pdf", headers=headers)

    @router.get(
        "/api/v1/certificates/{certificate_id}",
        summary="A certificate as JSON-LD, QR code (PNG/SVG) or PDF",
        responses={200: {"content": {m: {} for m in FORMATS.values()}}},
        dependencies=[Depends(READ)],
    )
    async def get_certificate(
        request: Request,
        certificate_id: str,
        format: str | None = None,
        payload: str = "divoc",
        lang: str | None = None,
    ) -> Response:
        fmt = _format(request, format)
        rec = await run_in_threadpool(readable, request, certificate_id)
        locale = lang or request.headers.get("accept-language", "en")[:2].lower() or "en"
        return await run_in_threadpool(render, rec, fmt, payload, locale)

    @router.post(
        "/api/v1/certificates/{certificate_id}/revoke",
        summary="Revoke a certificate",
        dependencies=[Depends(LIFECYCLE)],
    )
    async def revoke(request: Request, certificate_id: str) -> Response:
        await run_in_threadpool(lifecycle, request, certificate_id, "revoke")
        body = await read_json(request, registry.settings.max_body_bytes)
        reason = _text(body, "reason")
        rec = await run_in_threadpool(certs().revoke, certificate_id, reason, _actor(request))
        return JSONResponse(rec)

    @router.post(
        "/api/v1/certificates/{certificate_id}/suspend",
        summary="Suspend a certificate",
        dependencies=[Depends(LIFECYCLE)],
    )
    async def suspend(request: Request, certificate_id: str) -> Response:
        await run_in_threadpool(lifecycle, request, certificate_id, "suspend")
        body = await read_json(request, registry.settings.max_body_bytes)
        reason = _text(body, "reason")
        until = _text(body, "until", required=False, limit=40)
        if until is not None and until <= now_iso():
            raise Invalid(
                "1 field failed validation",
                errors=[
                    {
                        "pointer": "/until",
                        "message": "must be a future date-time",
                        "keyword": "format",
                    }
                ],
            )
        rec = await run_in_threadpool(
            certs().suspend, certificate_id, reason, until, _actor(request)
        )
        return JSONResponse(rec)

    @router.post(
        "/api/v1/certificates/{certificate_id}/reinstate",
        summary="Lift a certificate's suspension",
        dependencies=[Depends(LIFECYCLE)],
    )
    async def reinstate(request: Request, certificate_id: str) -> Response:
        await run_in_threadpool(lifecycle, request, certificate_id, "reinstate")
        rec = await run_in_threadpool(certs().reinstate, certificate_id, _actor(request))
        return JSONResponse(rec)

    @router.post(
        "/api/v1/certificates/{certificate_id}/correct",
        summary="Correct the vaccination behind a certificate (a new certificate replaces it)",
        status_code=202,
        dependencies=[Depends(CORRECT)],
    )
    async def correct(request: Request, certificate_id: str) -> Response:
        vaccinations = gate(request, VACCINATION)
        vaccinations.scope("update")  # correcting changes the vaccination
        body = await read_json(request, registry.settings.max_body_bytes, patch=True)
        rec = await run_in_threadpool(readable, request, certificate_id)
        if rec["status"] == "revoked":
            raise BadRequest(f"certificate {certificate_id} is revoked; correct its replacement")
        updated = await run_in_threadpool(
            lambda: vaccinations.update(rec["vaccination"], body, patch=True)
        )
        return JSONResponse(
            {"vaccination": updated, "certificate": certificate_id, "status": "re-issuing"},
            status_code=202,
        )

    @router.get(
        "/api/v1/status-lists/{purpose}/{number}",
        summary="A signed Bitstring Status List credential of this issuer",
        dependencies=[Depends(FOR_VERIFIERS)],
    )
    async def status_list(purpose: str, number: str) -> Response:
        try:
            n = status.list_number(number)
        except status.StatusListError:
            raise NotFound(f"no status list {purpose}/{number[:40]}") from None
        if purpose not in PURPOSES:
            raise NotFound(f"no status list {purpose}/{n}")
        doc = await run_in_threadpool(certs().status_list_credential, purpose, n)
        return JSONResponse(doc, media_type=LD_JSON, headers={"Cache-Control": "max-age=60"})

    @router.post(
        "/api/v1/verify",
        summary="Verify a certificate: VALID, REVOKED, SUSPENDED, EXPIRED or INVALID",
        dependencies=[Depends(VERIFY)],
    )
    async def verify(request: Request) -> Response:
        limits = VerifyLimits.from_config(certs().config)
        body = await read_body(
            request.headers, request.stream(), limits, registry.settings.max_body_bytes
        )
        if isinstance(body, dict) and isinstance(body.get("text"), str):
            # a SMART Health Card (shc:/... or its JWS) or an EU DCC / HCERT (HC1:...)
            try:
                check_text(body["text"], limits, pointer="/text")
            except LimitExceeded as exc:
                raise exc.http_error() from None
            verdict = await _bounded(health_formats.verify_text, certs(), body["text"])
            return JSONResponse(verdict.as_dict())
        credential = _credential_from(body, limits)
        verdict = await _bounded(certs().verifier.verify, credential)
        return JSONResponse(verdict.as_dict())

    def text_qr(text: str, fmt: str | None, *, ec_level: str, max_version: int) -> Response:
        from open_registry.plugins.certificates import qr

        if fmt in (None, "text"):
            return Response(text, media_type="text/plain")
        if fmt not in ("png", "svg"):
            raise BadRequest(f"format must be text, png or svg, not {fmt!r}")
        try:
            matrix = qr.encode_text(text, ec_level=ec_level, max_version=max_version)
        except qr.QRError as exc:
            raise Invalid(
                f"the certificate does not fit a QR code: {exc}",
                errors=[{"pointer": "", "message": str(exc), "keyword": "maxLength"}],
            ) from None
        if fmt == "png":
            return Response(qr.matrix_png(matrix), media_type="image/png")
        return Response(qr.matrix_svg(matrix), media_type="image/svg+xml")

    @router.get(
        "/api/v1/certificates/{certificate_id}/shc",
        summary="The certificate as a SMART Health Card (JWS, or its shc:/ QR code)",
        dependencies=[Depends(READ)],
    )
    async def smart_health_card(
        request: Request, certificate_id: str, format: str | None = None
    ) -> Response:
        rec = await run_in_threadpool(readable, request, certificate_id)
        # cached per certificate version: ECDSA signatures differ each time, a card should not
        jws = (
            await run_in_threadpool(
                renders.get,
                (rec["id"], rec["_version"], "shc"),
                lambda: health_formats.smart_health_card(certs(), rec).encode(),
            )
        ).decode()
        if format is None or format == "json":
            return JSONResponse(
                {"verifiableCredential": [jws]}, media_type="application/smart-health-card"
            )
        from open_registry.plugins.certificates.shc import MAX_VERSION, to_qr_text

        return text_qr(to_qr_text(jws), format, ec_level="L", max_version=MAX_VERSION)

    @router.get(
        "/api/v1/certificates/{certificate_id}/hcert",
        summary="The certificate as an EU DCC / WHO GDHCN HCERT (HC1: text or QR code)",
        dependencies=[Depends(READ)],
    )
    async def eu_dcc(request: Request, certificate_id: str, format: str | None = None) -> Response:
        rec = await run_in_threadpool(readable, request, certificate_id)
        text = (
            await run_in_threadpool(
                renders.get,
                (rec["id"], rec["_version"], "hcert"),
                lambda: health_formats.hcert_text(certs(), rec).encode(),
            )
        ).decode()
        return text_qr(text, format, ec_level="Q", max_version=40)

    @router.get(
        "/api/v1/certificates/{certificate_id}/ddcc",
        summary="The certificate as a WHO DDCC:VS FHIR R4 bundle",
        dependencies=[Depends(READ)],
    )
    async def ddcc_bundle(request: Request, certificate_id: str) -> Response:
        rec = await run_in_threadpool(readable, request, certificate_id)
        bundle = await run_in_threadpool(health_formats.ddcc, certs(), rec)
        return JSONResponse(bundle, media_type="application/fhir+json")

    @router.get(
        "/.well-known/jwks.json",
        summary="The ES256 keys of SMART Health Cards and HCERTs this registry signs",
        dependencies=[Depends(FOR_VERIFIERS)],
    )
    async def jwks() -> Response:
        keys = await run_in_threadpool(health_formats.jwks, certs())
        return JSONResponse(keys, headers=CORS_HEADERS)

    @router.options(
        "/.well-known/jwks.json",
        summary="CORS preflight of the JWK set (web verifiers fetch it from other origins)",
        status_code=204,
        response_class=Response,
        dependencies=[Depends(FOR_VERIFIERS)],
    )
    async def jwks_preflight(request: Request) -> Response:
        return _preflight(request)

    @router.get(
        "/.well-known/crl/{kid}.json",
        summary="The SMART Health Card revocation list of one ES256 key",
        dependencies=[Depends(FOR_VERIFIERS)],
    )
    async def card_revocation_list(kid: str) -> Response:
        crl = await run_in_threadpool(health_formats.revocation_list, certs(), kid)
        return JSONResponse(crl, headers=CORS_HEADERS)

    @router.options(
        "/.well-known/crl/{kid}.json",
        summary="CORS preflight of a card revocation list",
        status_code=204,
        response_class=Response,
        dependencies=[Depends(FOR_VERIFIERS)],
    )
    async def crl_preflight(request: Request) -> Response:
        return _preflight(request)

    @router.post(
        "/credentials/issue",
        summary="VC-API: sign a credential as this issuer",
        status_code=201,
        dependencies=[Depends(ISSUE)],
    )
    async def vc_issue(request: Request) -> Response:
        p = principal_of(request)  # signed in (the rule); the role or the scope is checked here
        if "system-admin" not in p.roles and not (p.kind == "client" and ISSUE_SCOPE in p.scopes):
            raise Forbidden(f"issuing needs the system-admin role or a client with {ISSUE_SCOPE}")
        body = await read_json(request, registry.settings.max_body_bytes)
        credential = body.get("credential") if isinstance(body, dict) else None
        if not isinstance(credential, dict):
            raise Invalid(
                "1 field failed validation",
                errors=[
                    {
                        "pointer": "/credential",
                        "message": "an unsigned credential object",
                        "keyword": "required",
                    }
                ],
            )
        problem = subject_problem(credential)
        if problem is not None:  # VCDM 1.1 and 2.0 require it; a verifier would refuse it
            raise BadRequest(
                f"the credential cannot be issued: {problem}",
                errors=[
                    {
                        "pointer": "/credential/credentialSubject",
                        "message": problem,
                        "keyword": "required",
                    }
                ],
            )
        rt = certs()
        key = rt.keys.current()
        issuer = credential.get("issuer")
        issuer_id = issuer.get("id") if isinstance(issuer, dict) else issuer
        if issuer_id is None:
            credential = {**credential, "issuer": key.issuer}
        elif issuer_id != key.issuer:
            raise Invalid(
                "1 field failed validation",
                errors=[
                    {
                        "pointer": "/credential/issuer",
                        "message": f"this service issues as {key.issuer}",
                        "keyword": "const",
                    }
                ],
            )

        def sign() -> dict[str, Any]:
            return suites.sign(
                credential,
                key.private_key,
                key.verification_method,
                suite=rt.config.suite,
                canonicalizer=shortcut.canonicalize,
            )

        try:
            signed = await run_in_threadpool(sign)
        except (JsonLdProcessingError, UnknownContextError, SigningError, ValueError) as exc:
            raise Invalid(
                "the credential cannot be signed",
                errors=[{"pointer": "/credential", "message": str(exc), "keyword": "jsonld"}],
            ) from None
        return JSONResponse({"verifiableCredential": signed}, status_code=201)

    @router.post(
        "/credentials/verify",
        summary="VC-API: verify a credential",
        dependencies=[Depends(VERIFY)],
    )
    async def vc_verify(request: Request) -> Response:
        limits = VerifyLimits.from_config(certs().config)
        body = await read_body(
            request.headers, request.stream(), limits, registry.settings.max_body_bytes
        )
        credential = body.get("verifiableCredential") if isinstance(body, dict) else None
        if not isinstance(credential, dict):
            raise Invalid(
                "1 field failed validation",
                errors=[
                    {
                        "pointer": "/verifiableCredential",
                        "message": "a credential object",
                        "keyword": "required",
                    }
                ],
            )
        verdict = await _bounded(certs().verifier.verify, credential)
        ok = verdict.status == VALID
        return JSONResponse(
            {
                "verified": ok,
                "checks": [k for k, v in verdict.checks.items() if v],
                "warnings": verdict.warnings,
                "errors": [] if ok else [f"{verdict.status}: {verdict.reason}"],
                "status": verdict.status,
            },
            status_code=200 if ok else 400,
        )

    @router.get(
        "/.well-known/did.json",
        summary="The issuer's DID document (did:web)",
        dependencies=[Depends(FOR_VERIFIERS)],
    )
    async def did_document() -> Response:
        doc = certs().keys.did_document()
        if doc is None:
            raise NotFound("this registry issues as did:key; there is no did:web document")
        return JSONResponse(doc, media_type="application/did+json")

    return [router]
