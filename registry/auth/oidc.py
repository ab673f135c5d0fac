"""Bearer tokens of an external OpenID Connect provider (e.g. Keycloak), verified against the
issuer's JWKS: fetched from `oidc_jwks_url`, cached `oidc_jwks_cache_seconds`, fetched again at
once when a token names a key id the cache does not hold (key rotation), at most every
`REFETCH_SECONDS` so unknown key ids cannot make us hammer the provider.

Roles, facility code and recipient id come from the claims at the configured dotted paths
(`realm_access.roles` is Keycloak's realm roles; `query.value_at`: no walking into lists)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import jwt

from open_registry.core.auth.principal import ROLES, Principal
from open_registry.core.auth.tokens import TokenRefused, decode
from open_registry.core.paths import value_at
from open_registry.core.settings import Settings

REFETCH_SECONDS = 10.0


class OidcVerifier:
    """Verifies the provider's tokens and maps their claims onto a `Principal`."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None):
        if not settings.oidc_jwks_url:
            raise ValueError("oidc_issuer is set but oidc_jwks_url is not")
        self.settings = settings
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience or None
        self.algorithms = [a.strip() for a in settings.oidc_algorithms.split(",") if a.strip()]
        self.http = http or httpx.Client(timeout=10)
        self.lock = threading.Lock()
        self.keys: dict[str, Any] = {}
        self.fetched_at = 0.0

    def _fetch(self) -> None:
        try:
            resp = self.http.get(self.settings.oidc_jwks_url)
            resp.raise_for_status()
            jwks = jwt.PyJWKSet.from_dict(resp.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            raise TokenRefused(f"signing keys unavailable: {type(exc).__name__}") from None
        self.keys = {k.key_id: k for k in jwks.keys if k.key_id}
        self.fetched_at = time.monotonic()

    def key_for(self, kid: str | None) -> Any:
        with self.lock:
            age = time.monotonic() - self.fetched_at
            if not self.keys or age > self.settings.oidc_jwks_cache_seconds:
                self._fetch()
            elif kid not in self.keys and age > REFETCH_SECONDS:
                self._fetch()  # the provider may have rotated its keys
            key = self.keys.get(kid) if kid else None
            if key is None and kid is None and len(self.keys) == 1:
                key = next(iter(self.keys.values()))
        if key is None:
            raise TokenRefused("unknown key id")
        return key

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("malformed") from None
        if header.get("alg") not in self.algorithms:
            raise TokenRefused("algorithm not allowed")
        key = self.key_for(header.get("kid"))
        options: dict[str, Any] = {"require": ["exp", "iss", "sub"]}
        if self.audience is None:
            options["verify_aud"] = False
        claims = decode(
            token,
            key.key,
            algorithms=self.algorithms,
            audience=self.audience,
            issuer=self.issuer,
            options=options,
            leeway=30,
        )
        s = self.settings
        raw_roles = value_at(claims, s.oidc_roles_claim)
        roles = raw_roles if isinstance(raw_roles, list) else []
        facility = value_at(claims, s.oidc_facility_claim)
        recipient = value_at(claims, s.oidc_recipient_claim)
        return Principal(
            kind="oidc",
            subject=str(claims["sub"]),
            # the provider's other roles (offline_access, ...) mean nothing here
            roles=frozenset(r for r in roles if r in ROLES),
            facility=str(facility) if isinstance(facility, str | int) else None,
            recipient=str(recipient) if isinstance(recipient, str | int) else None,
            via="oidc",
            scopes=frozenset(str(claims.get("scope") or "").split()),
        )
