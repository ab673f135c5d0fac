"""The certificates plugin's settings: the `[plugins.certificates]` table of the settings file
(or `REGISTRY_PLUGINS__CERTIFICATES__<KEY>` variables). Every key has a working default, so a
fresh install issues did:key-signed certificates with a key generated in the data folder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from open_registry.core.plugin_settings import (
    PluginSettingError,
    setting_bool,
    setting_int,
    setting_list,
)
from open_registry.plugins.certificates.limits import DEFAULTS as VERIFY_DEFAULTS
from open_registry.plugins.certificates.suites import EDDSA_RDFC_2022, SUITES

#: the environment variable that may hold the signing key (a Multikey secret, `z...`)
KEY_ENV = "REGISTRY_CERTIFICATES_SIGNING_KEY"


#: a `[plugins.certificates]` setting that cannot be used; the message names it
ConfigError = PluginSettingError

#: the settings that bound anonymous verification (whole numbers, at least 1)
_VERIFY_LIMITS = (
    "max_verify_bytes",
    "max_verify_depth",
    "max_verify_nodes",
    "max_verify_array",
    "max_verify_blank_nodes",
    "max_verify_text",
)
#: the verification page's settings (whole numbers, at least 1)
_VERIFY_PAGE = (
    "verify_page_max_cache_age",
    "verify_page_max_image_bytes",
    "verify_page_max_image_pixels",
)


@dataclass(frozen=True)
class CertificatesConfig:
    """What the plugin needs to issue and verify certificates."""

    enabled: bool = True
    #: `did:key` (the current key's own DID) or a `did:web:<host>[:path]` DID
    issuer: str = "did:key"
    #: the signature suite of new certificates
    suite: str = EDDSA_RDFC_2022
    #: where signing keys live (secret files 0600); default `<data_dir>/keys`
    keys_dir: Path | None = None
    #: the public address of this registry, for status list and certificate links
    base_url: str = "http://localhost:8000"
    #: other issuers whose certificates verify as trusted (DIDs); our own always are
    trusted_issuers: tuple[str, ...] = ()
    #: a folder of DID documents (`*.json`) of other trusted did:web issuers, read offline
    trust_dir: Path | None = None
    #: per-programme credential templates: `<programme code>.json` in this folder
    templates_dir: Path | None = None
    #: how many times one vaccination's certificate may be corrected (re-issued)
    max_corrections: int = 3
    #: how many outbox events a worker turns into certificates per transaction
    batch_size: int = 100
    #: ISO 3166-1 alpha-2 country of issue, for EU DCC / HCERT (`co`, claim 1, the UVCI)
    country_code: str = "XX"
    #: the issuing authority's name, for EU DCC `is` (default: the registry's title)
    issuer_name: str | None = None
    #: the PDF's Jinja2 template file (default: the shipped `templates/certificate.html`)
    pdf_template: Path | None = None
    #: TrueType fonts for PDF text beyond Latin-1: `{locale = "path.ttf"}` or `hi=/a.ttf,...`
    pdf_fonts: Any = None
    #: a folder of `<locale>.json` label catalogs for the PDF (default: the shipped en/fr/hi)
    pdf_locales_dir: Path | None = None
    # what the anonymous verify endpoints accept before any JSON-LD work (see `limits.py`)
    #: bytes of a verify body, and of what a QR payload inflates to
    max_verify_bytes: int = VERIFY_DEFAULTS.max_bytes
    #: nesting levels of objects and arrays in a verify body
    max_verify_depth: int = VERIFY_DEFAULTS.max_depth
    #: JSON values in a verify body, in all
    max_verify_nodes: int = VERIFY_DEFAULTS.max_nodes
    #: elements of any one array in a verify body
    max_verify_array: int = VERIFY_DEFAULTS.max_array
    #: blank nodes (objects without an id, `_:` labels) in a verified credential
    max_verify_blank_nodes: int = VERIFY_DEFAULTS.max_blank_nodes
    #: characters of a QR code's text (`text`) or base64 payload (`qr`) sent to verify
    max_verify_text: int = VERIFY_DEFAULTS.max_text
    # the public verification page `/verify` (see `verify_page.py`)
    #: seconds after which the page warns that its cached keys and status lists are old
    verify_page_max_cache_age: int = 24 * 3600
    #: bytes of a picture the page sends to the server's QR reader
    verify_page_max_image_bytes: int = 4 * 1024 * 1024
    #: pixels (width x height) of such a picture
    verify_page_max_image_pixels: int = 16_000_000

    @classmethod
    def from_settings(cls, settings: Any) -> CertificatesConfig:
        raw: Mapping[str, Any] = (getattr(settings, "plugins", None) or {}).get("certificates", {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) plugins.certificates.{', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        data_dir = Path(getattr(settings, "data_dir", "data"))
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "enabled":
                values[key] = setting_bool(f"plugins.certificates.{key}", value)
            elif key == "pdf_fonts":
                values[key] = value
            elif key in (
                "keys_dir",
                "trust_dir",
                "templates_dir",
                "pdf_template",
                "pdf_locales_dir",
            ):
                values[key] = Path(value)
            elif key == "trusted_issuers":
                values[key] = setting_list(value)
            elif key in _VERIFY_LIMITS or key in _VERIFY_PAGE:
                values[key] = setting_int(f"plugins.certificates.{key}", value, minimum=1)
            elif key in ("max_corrections", "batch_size"):
                try:
                    values[key] = int(value)
                except (TypeError, ValueError):
                    raise ConfigError(
                        f"plugins.certificates.{key} must be a whole number, got {value!r}"
                    ) from None
            else:
                values[key] = str(value)
        config = cls(**values)
        if config.keys_dir is None:
            config = cls(**{**values, "keys_dir": data_dir / "keys"})
        config.check()
        return config

    def check(self) -> None:
        if self.suite not in SUITES:
            raise ConfigError(
                f"plugins.certificates.suite {self.suite!r} is not one of {', '.join(SUITES)}"
            )
        if self.issuer != "did:key" and not self.issuer.startswith("did:web:"):
            raise ConfigError(
                f"plugins.certificates.issuer must be 'did:key' or a did:web DID, "
                f"got {self.issuer!r}"
            )
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"plugins.certificates.base_url must be an http(s) address, got {self.base_url!r}"
            )
        if len(self.country_code) != 2 or not self.country_code.isalpha():
            raise ConfigError(
                f"plugins.certificates.country_code must be two letters, got {self.country_code!r}"
            )
        if self.max_corrections < 0 or self.batch_size < 1:
            raise ConfigError("plugins.certificates.max_corrections >= 0 and batch_size >= 1")
        for key in (*_VERIFY_LIMITS, *_VERIFY_PAGE):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"plugins.certificates.{key} must be a whole number >= 1")

    @property
    def api_base(self) -> str:
        return self.base_url.rstrip("/") + "/api/v1"
