"""Our own signed tokens: short-lived JWT bearer tokens for the API and the session cookie of the
pages (HS256, PyJWT).

The signing secret is `settings.auth_secret` (`REGISTRY_AUTH_SECRET`), or the key file
`<data_dir>/auth-secret.key` (mode 0600, created on first use; every process of a deployment
needs the same one). Tokens carry `iss`, `aud`, `sub`, `iat`, `exp`, `jti`, the roles, the facility
code and the recipient id. A token is refused when its signature, algorithm, issuer, audience or
time is wrong; the session cookie has an audience of its own, so neither passes for the other.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from open_registry.core.auth.principal import Principal
from open_registry.core.errors import Unauthorized
from open_registry.core.settings import Settings
from open_registry.core.storage import private_folder

ALGORITHM = "HS256"
SECRET_FILE = "auth-secret.key"
SESSION_COOKIE = "registry_session"
SESSION_SUFFIX = ":session"
CACHE_SIZE = 4096


class TokenRefused(Unauthorized):
    """A token that is not valid here; `reason` says why (for the audit log, not the client)."""

    def __init__(
        self,
        reason: str,
        detail: str = "the token is not valid (signature, issuer, audience or expiry)",
    ):
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        self.reason = reason


def decode(token: str, key: Any, **checks: Any) -> dict[str, Any]:
    """`jwt.decode(token, key, **checks)`, its failures as `TokenRefused` naming the reason."""
    try:
        return jwt.decode(token, key, **checks)
    except jwt.ExpiredSignatureError:
        raise TokenRefused("expired") from None
    except jwt.InvalidAudienceError:
        raise TokenRefused("wrong audience") from None
    except jwt.InvalidIssuerError:
        raise TokenRefused("wrong issuer") from None
    except jwt.InvalidAlgorithmError:
        raise TokenRefused("algorithm not allowed") from None
    except jwt.InvalidSignatureError:
        raise TokenRefused("bad signature") from None
    except jwt.PyJWTError as exc:
        raise TokenRefused(f"malformed: {type(exc).__name__}") from None


def load_secret(settings: Settings) -> bytes:
    """The signing secret: the setting, or the key file (created 0600 when missing)."""
    if settings.auth_secret:
        raw = settings.auth_secret.encode()
        if len(raw) < 32:
            raise ValueError("setting 'auth_secret' must be at least 32 characters")
        return raw
    path = settings.auth_secret_path
    if not path.exists():
        _write_secret(path)
    return base64.b64decode(path.read_text().strip())


def _write_secret(path: Path) -> None:
    private_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        with contextlib.suppress(FileExistsError):  # two processes starting: one secret
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Issued:
    token: str
    expires_in: int


class Tokens:
    """Mints and checks our tokens."""

    def __init__(self, settings: Settings, secret: bytes | None = None):
        self.secret = secret if secret is not None else load_secret(settings)
        self.issuer = settings.token_issuer
        self.audience = settings.token_audience
        self.ttl = settings.token_ttl_seconds
        self.session_ttl = settings.session_ttl_seconds
        #: tokens already verified -> (principal, exp): a client sends the same token many
        #: times, and checking its signature costs more than the rest of a simple read
        self._verified: dict[tuple[str, bool], tuple[Principal, int, int]] = {}

    def _claims(self, p: Principal, audience: str, ttl: int) -> dict[str, Any]:
        issued = time.time()
        now = int(issued)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "sub": p.subject,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            # the issue time in milliseconds: a token issued in the same second as the user's
            # password change or disable, but after it, still counts (see auth/standing.py)
            "iat_ms": int(issued * 1000),
            "kind": p.kind,
            "roles": sorted(p.roles),
        }
        if p.facility:
            claims["facility"] = p.facility
        if p.recipient:
            claims["recipient"] = p.recipient
        if p.via:
            claims["via"] = p.via
        if p.scopes:
            claims["scope"] = " ".join(sorted(p.scopes))
        return claims

    def issue(self, p: Principal) -> Issued:
        """A bearer token for the API."""
        token = jwt.encode(self._claims(p, self.audience, self.ttl), self.secret, ALGORITHM)
        return Issued(token, self.ttl)

    def issue_session(self, p: Principal) -> Issued:
        """The value of the pages' session cookie."""
        aud = self.audience + SESSION_SUFFIX
        token = jwt.encode(self._claims(p, aud, self.session_ttl), self.secret, ALGORITHM)
        return Issued(token, self.session_ttl)

    def verify(self, token: str, *, session: bool = False) -> Principal:
        """The principal of a valid token; `TokenRefused` naming the reason otherwise."""
        return self.verified(token, session=session)[0]

    def verified(self, token: str, *, session: bool = False) -> tuple[Principal, int]:
        """(the principal of a valid token, when it was issued in milliseconds since the
        epoch); `TokenRefused` naming the reason otherwise. Whether its user or client may
        still act is `Standing.check`'s question (Auth asks it)."""
        hit = self._verified.get((token, session))
        if hit is not None:
            if hit[1] > time.time():
                return hit[0], hit[2]
            self._verified.pop((token, session), None)
        p, exp, issued_ms = self._verify(token, session)
        if len(self._verified) >= CACHE_SIZE:
            self._verified.clear()  # simple and bounded; refilled by the next requests
        self._verified[(token, session)] = (p, exp, issued_ms)
        return p, issued_ms

    def _verify(self, token: str, session: bool) -> tuple[Principal, int, int]:
        aud = self.audience + (SESSION_SUFFIX if session else "")
        claims = decode(
            token,
            self.secret,
            algorithms=[ALGORITHM],
            audience=aud,
            issuer=self.issuer,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
        roles = claims.get("roles")
        if claims.get("kind") not in ("user", "client") or not isinstance(roles, list):
            raise TokenRefused("malformed: kind or roles")
        p = Principal(
            kind=claims["kind"],
            subject=str(claims["sub"]),
            roles=frozenset(str(r) for r in roles),
            facility=claims.get("facility"),
            recipient=claims.get("recipient"),
            via=claims.get("via"),
            scopes=frozenset(str(claims.get("scope") or "").split()),
        )
        issued_ms = claims.get("iat_ms")
        if not isinstance(issued_ms, int) or isinstance(issued_ms, bool):
            issued_ms = int(claims["iat"]) * 1000  # a token from before `iat_ms`
        return p, int(claims["exp"]), issued_ms
