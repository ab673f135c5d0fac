"""The certificates plugin's state for one registry: settings, keys, issuer, status lists and
the verifier, made on first use and kept on the registry object."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from open_registry.core import Registry, StateKey
from open_registry.plugins.certificates import status, suites
from open_registry.plugins.certificates.config import CertificatesConfig
from open_registry.plugins.certificates.es256 import EcKeys
from open_registry.plugins.certificates.issuance import CERTIFICATE, Issuer
from open_registry.plugins.certificates.keystore import KeyStore
from open_registry.plugins.certificates.verifier import TrustStore, Verifier

_STATE: StateKey[Certificates] = StateKey("certificates")
STATUS_LIST_TTL = timedelta(minutes=10)


class Certificates:
    """Everything the plugin's hooks, routes and commands share for one registry."""

    def __init__(self, registry: Any):
        self.registry = registry
        self.config = CertificatesConfig.from_settings(registry.settings)
        self.keys = KeyStore(
            self.config.keys_dir or registry.settings.data_dir / "keys", self.config.issuer
        )
        self.keys.ensure()
        self.issuer = Issuer(registry, self.config, self.keys)
        self.trust = TrustStore(self.keys, self.config.trusted_issuers, self.config.trust_dir)
        self.lists_prefix = f"{self.config.api_base}/status-lists"
        self.verifier = Verifier(
            self.trust, local_prefix=self.lists_prefix, local_lists=self.list_bits
        )
        self._signed_lists: dict[tuple[str, int], tuple[str, datetime, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        # the ES256 key of SMART Health Cards and HCERTs exists from the start, so verifiers
        # find it at /.well-known/jwks.json before the first card is signed
        self.ec_keys = EcKeys(self.keys.folder)
        self.ec_keys.ensure()

    # -- status lists ---------------------------------------------------------------------------
    def list_bits(self, purpose: str, number: int) -> bytes:
        """The current bits of one of our status lists, read from the certificate table."""
        if purpose not in status.PURPOSES:
            raise status.StatusListError(f"unknown status purpose {purpose!r}")
        table = self.registry.services[CERTIFICATE].table
        lo = number * status.LIST_SIZE
        where = [
            table.c.statusIndex >= lo,
            table.c.statusIndex < lo + status.LIST_SIZE,
            table.c._deleted_at.is_(None),
        ]
        if purpose == "revocation":
            where.append(table.c.status == "revoked")
        else:
            now = datetime.now(UTC)
            where.append(table.c.status == "suspended")
            where.append(sa.or_(table.c.suspendedUntil.is_(None), table.c.suspendedUntil > now))
        bits = bytearray(status.LIST_SIZE // 8)
        with self.registry.db.engine.connect() as conn:
            for (index,) in conn.execute(sa.select(table.c.statusIndex).where(*where)):
                position = index - lo
                bits[position >> 3] |= 0x80 >> (position & 7)
        return bytes(bits)

    def status_list_credential(self, purpose: str, number: int) -> dict[str, Any]:
        """Our signed status list credential (re-signed when a bit changed or it nears expiry)."""
        bits = self.list_bits(purpose, number)
        digest = hashlib.sha256(bits).hexdigest()
        now = datetime.now(UTC)
        cached = self._signed_lists.get((purpose, number))
        if cached and cached[0] == digest and cached[1] - now > STATUS_LIST_TTL / 2:
            return cached[2]
        key = self.keys.current()
        url = status.list_url(self.config.api_base, purpose, number)
        until = now + STATUS_LIST_TTL
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        unsigned = status.list_credential(
            url,
            purpose,
            key.issuer,
            status.encode_bits(bits),
            now.strftime(fmt),
            until.strftime(fmt),
        )
        signed = suites.sign(
            unsigned, key.private_key, key.verification_method, suite=self.config.suite
        )
        with self._lock:
            self._signed_lists[(purpose, number)] = (digest, until, signed)
        return signed

    # -- lifecycle --------------------------------------------------------------------------------
    def revoke(self, certificate_id: str, reason: str, actor: str | None) -> dict[str, Any]:
        record = self.issuer.set_status(certificate_id, "revoked", reason=reason, actor=actor)
        self.verifier.forget_lists()
        return record

    def suspend(
        self, certificate_id: str, reason: str, until: str | None, actor: str | None
    ) -> dict[str, Any]:
        record = self.issuer.set_status(
            certificate_id, "suspended", reason=reason, until=until, actor=actor
        )
        self.verifier.forget_lists()
        return record

    def reinstate(self, certificate_id: str, actor: str | None) -> dict[str, Any]:
        record = self.issuer.set_status(certificate_id, "active", actor=actor)
        self.verifier.forget_lists()
        return record


def runtime(registry: Registry) -> Certificates:
    """The plugin state of `registry`, made on first use."""
    return registry.state(_STATE, lambda: Certificates(registry))
