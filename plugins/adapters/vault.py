"""Document vault, pull-URI style (as DIVOC offered DigiLocker): when a certificate is issued we
push its metadata and a URI to the vault; the vault later pulls the document from us by that URI.
Both directions are signed with a shared secret (HMAC-SHA256).

    [plugins.vault]
    push_url = "https://vault.example.org/issuer/push"
    secret_env = "VAULT_SECRET"          # the shared secret (never in the settings file in git)
    issuer_id = "org.example.registry"   # our id at the vault
    doc_type = "VACER"
    base_url = "https://registry.example.org"   # where the vault pulls from
    timeout = 10

Push: `POST push_url` `{uri, docType, docName, owner, issuedOn, pullUrl, action}` with
`Idempotency-Key` and `X-Vault-Signature: t=<unix time>,v1=<hex HMAC>`; `owner` is the
recipient's identity (read and decrypted when the push is sent, never stored in the queue).
Pull: the vault `POST`s `{uri}` to `/api/v1/vault/pull`, signed the same way; we answer the signed
credential, or 401 for a bad signature, 404 for an unknown URI.

The push goes through the `push_document` hook: a country's own vault plugin receives the same
documents (the built-in one only acts when `[plugins.vault]` is configured).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Depends, Request

from open_registry.core import (
    DeliveryError,
    NotFound,
    PermanentDeliveryError,
    RegistryError,
    StartupError,
)
from open_registry.core.auth import rules
from open_registry.core.bodies import read_limited
from open_registry.core.hookspecs import hookimpl
from open_registry.plugins.adapters.config import section, url_setting
from open_registry.plugins.adapters.http import (
    ConfigError,
    Http,
    Refused,
    Unavailable,
    setting_secret,
    signature_header,
    verify_signature,
)

NAME = "vault"
SIGNATURE = "X-Vault-Signature"


class BadSignature(RegistryError):
    status = 401
    slug = "bad-signature"
    title = "Bad signature"


def _config(settings: Any) -> dict[str, Any]:
    table = section(settings, NAME)
    if not table:
        return {}
    where = f"plugins.{NAME}"
    try:
        url_setting(table, "push_url", where)
        url_setting(table, "base_url", where)
        if not setting_secret(table, "secret", where):
            raise ConfigError(f"{where}.secret_env (the variable holding the secret) is required")
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    return table


def uri_of(table: dict[str, Any], certificate_id: str) -> str:
    """The pull URI of a certificate: `<issuer id>-<doc type>-<certificate id>`."""
    return f"{table.get('issuer_id', 'registry')}-{table.get('doc_type', 'VACER')}-{certificate_id}"


@hookimpl
def push_document(document: dict[str, Any], registry: Any) -> None:
    table = _config(registry.settings)
    if not table or document.get("type") != "certificate":
        return
    where = f"plugins.{NAME}"
    secret = setting_secret(table, "secret", where) or ""
    body = orjson.dumps(
        {
            "uri": uri_of(table, document["id"]),
            "docType": table.get("doc_type", "VACER"),
            "docName": table.get("doc_name", "Vaccination certificate"),
            "owner": document.get("owner"),
            "issuedOn": document.get("issued_at"),
            "pullUrl": url_setting(table, "base_url", where) + "/api/v1/vault/pull",
            "action": "A",
        }
    )
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": document["idempotency_key"],
        SIGNATURE: signature_header(secret, body),
    }
    http = Http(table, where)
    try:
        http.send("POST", url_setting(table, "push_url", where), body, headers)
    except Refused as exc:
        raise PermanentDeliveryError(f"the vault refused the push: {exc}") from None
    except Unavailable as exc:
        raise DeliveryError(f"the vault cannot be reached: {exc}") from None
    finally:
        http.close()


def pull(registry: Any, body: bytes, signature: str | None) -> dict[str, Any]:
    """Answer a signed pull request `{uri}` with the certificate it names."""
    table = _config(registry.settings)
    if not table:
        raise NotFound("no document vault is configured")
    secret = setting_secret(table, "secret", f"plugins.{NAME}") or ""
    if not signature or not verify_signature(secret, body, signature):
        raise BadSignature(f"the {SIGNATURE} header is missing, wrong or too old")
    try:
        uri = str(orjson.loads(body)["uri"])
    except Exception:
        raise BadSignature("the body must be a JSON object with a uri") from None
    prefix = uri_of(table, "")
    service = registry.services.get("certificate")
    if service is None or not uri.startswith(prefix):
        raise NotFound(f"no document with uri {uri!r}")
    record = service.get(uri[len(prefix) :])
    return {
        "uri": uri,
        "status": record.get("status"),
        "contentType": "application/vc+ld+json",
        "document": record.get("credential"),
    }


@hookimpl
def register_routes(registry: Any) -> list[Any]:
    if not _config(registry.settings):
        return []
    from fastapi import APIRouter
    from fastapi.concurrency import run_in_threadpool

    router = APIRouter(tags=["integrations"])

    @router.post(
        "/api/v1/vault/pull",
        summary="The document vault pulls a certificate by its URI (HMAC-signed request)",
        # no sign-in: the vault signs each request (HMAC, at most 5 minutes old), checked below
        dependencies=[Depends(rules.public("the vault's own signed requests (HMAC) only"))],
    )
    async def vault_pull(request: Request) -> dict[str, Any]:
        body = await read_limited(request, registry.settings.max_body_bytes)
        return await run_in_threadpool(pull, registry, body, request.headers.get(SIGNATURE))

    return [router]
