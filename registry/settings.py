"""Settings: passed into `create_app(settings)`, never read at import time.

Sources, later ones winning: defaults, a TOML settings file (`registry.toml` in the working
folder, or the path in `REGISTRY_SETTINGS`), then `REGISTRY_*` environment variables.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "REGISTRY_"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_flag(value: Any, *, empty: bool | None = None) -> bool | None:
    """A yes/no value as written in settings, environment variables and query parameters:
    true/false, 1/0, yes/no, on/off in any case; `empty` for ""; None when it is none of them."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return empty
    return True if text in _TRUE else False if text in _FALSE else None


@dataclass(frozen=True)
class Settings:
    """Everything an app or a command needs to know about its deployment."""

    #: SQLAlchemy URL; empty means SQLite at `<data_dir>/registry.db`.
    database_url: str = ""
    #: A read replica of `database_url` (PostgreSQL streaming standby) that serves callers'
    #: reads: record by id, lists, searches, exports. Writes, and reads by a caller whose own
    #: writes the replica has not replayed yet, go to `database_url` (docs/scaling.md). Empty:
    #: every read goes to `database_url`.
    database_read_url: str = ""
    #: PostgreSQL: let the driver prepare statements on the server (psycopg prepares one on its
    #: 5th use by a connection) and keep them for the connection's life. Turn it off behind a
    #: PgBouncer in transaction mode that does not track them (before 1.21, or without
    #: `max_prepared_statements`). Ignored on SQLite.
    database_prepared_statements: bool = True
    #: Folder for the SQLite file and other local state.
    data_dir: Path = Path("data")
    #: Alembic revisions generated from the schemas (default: `<data_dir>/migrations`).
    migrations_dir: Path | None = None
    #: Extra folders of entity schema files (the implementer's), after the shipped ones.
    schema_dirs: tuple[Path, ...] = ()
    #: Load the shipped schemas (facility, vaccinator, vaccine, program, recipient).
    default_schemas: bool = True
    #: Load the demo data into an empty database at start-up.
    demo_data: bool = False
    #: With `demo_data`: also a few thousand vaccinations of the last 60 days, with corrections,
    #: revocations and side-effect reports (`registry serve --demo` turns it on).
    demo_history: bool = False
    #: Page size when a search asks for none, and the largest allowed.
    page_size: int = 50
    max_page_size: int = 1000
    #: Largest request body accepted, in bytes.
    max_body_bytes: int = 1_048_576
    #: Largest file (the whole request body) `POST /api/v1/{entity}/imports` accepts, in bytes:
    #: a larger one is refused with 413 as soon as that many bytes have arrived.
    import_max_upload_bytes: int = 104_857_600
    #: Longest row of an import file (a CSV record, which may span lines, or a JSON line), in
    #: bytes: a longer row is an error of that row, read past without being held in memory.
    import_max_line_bytes: int = 1_048_576
    #: Deepest nesting of objects and arrays a JSON request body may have (the body itself is
    #: level 1); deeper bodies are refused with a 400 before anything else reads them.
    max_body_depth: int = 64
    #: Filters one search may have (query parameters or a search body's operators), sort keys
    #: it may list, and values all its `in` lists may hold together; more is a 400.
    max_filters: int = 50
    max_sort_keys: int = 8
    max_filter_values: int = 1000
    #: How long a write's `Idempotency-Key` is kept, in seconds from its first request (a
    #: retry with it within that time replays the first answer; docs/api.md, Idempotent
    #: writes); the outbox worker deletes expired keys.
    idempotency_ttl_seconds: int = 86_400
    #: Title shown in the API docs.
    title: str = "Registry"
    #: Discover plugins through entry points (tests may turn this off).
    load_entrypoints: bool = True
    #: Log every plugin hook call with its arguments and result (logger `registry.hooks`, at
    #: INFO; `REGISTRY_TRACE_HOOKS=true`): to see which plugin did what.
    trace_hooks: bool = False
    #: Run an outbox worker thread inside the app process (the SQLite default; on PostgreSQL
    #: run `registry worker` processes instead, or keep this on for a single machine).
    inline_worker: bool = True
    #: How long an idle worker waits before looking for new events, in seconds.
    worker_poll_seconds: int = 1
    #: The largest outbox batch a worker grows to while its batches come back full (0: the
    #: default, 800; at most `100`: batches stay at 100). docs/operations.md, Keeping issuance up.
    worker_max_batch: int = 0
    #: Database connections per process (requests beyond it wait for one).
    pool_size: int = 20
    #: Freeze what start-up made out of the garbage collector's sight (`gc.freeze`), once per
    #: server or worker process (docs/operations.md, Garbage collection); off only to compare.
    gc_freeze: bool = True
    # -- heavy requests and timeouts (docs/operations.md) -------------------------------------
    #: Heavy requests (exports, import uploads, list pages over `heavy_page_size` or with
    #: `count=true`) running at once per process; one more waits up to
    #: `heavy_request_wait_seconds` for a slot, then gets 503 with Retry-After. 0: no limit.
    heavy_request_limit: int = 4
    heavy_request_wait_seconds: int = 10
    heavy_page_size: int = 200
    #: Seconds a connection has to send a request's head (from its first byte, or from the
    #: connection's opening), the whole body (from the head), and how long an idle kept-alive
    #: connection stays open; past each, 408 (or, idle, a close). `registry serve` applies the
    #: head and keep-alive limits; the body limit holds under any ASGI server.
    header_timeout_seconds: int = 10
    body_timeout_seconds: int = 120
    keep_alive_timeout_seconds: int = 5
    # -- observing it (docs/operations.md) ----------------------------------------------------
    #: Log lines as `text` (`LEVEL logger: message [request <id>]`) or `json` (one object per
    #: line, with the request id); `registry serve` installs it.
    log_format: str = "text"
    #: `/metrics` for anyone (keep it on a network only the scraper reaches) rather than for
    #: callers with the `monitoring` or `system-admin` role.
    metrics_public: bool = False
    #: How long the metrics read from the database (queues, lag, imports) are kept, in
    #: seconds, so that frequent scrapes and `/ready` probes cannot load the database.
    metrics_cache_seconds: int = 2
    #: `/ready` answers 503 when the oldest due outbox event has waited longer than this, in
    #: seconds (the workers are behind or stopped); 0 leaves the lag out of readiness.
    ready_max_lag_seconds: int = 300
    #: How many audit chains writers append to side by side (PostgreSQL; SQLite has one): each
    #: write transaction takes a chain no other writer holds, so writers do not queue behind
    #: one row (docs/audit.md). Raising it later adds chains; lowering it keeps the old ones.
    audit_shards: int = 8
    #: SQLite's `synchronous` pragma (the database runs in WAL mode): `FULL` (the default)
    #: syncs the log to disk at every commit, so a committed write survives a power loss or an
    #: OS crash; `NORMAL` syncs only at checkpoints: faster writes, but a power loss may lose
    #: the last commits (never a process crash, and the file stays consistent). See
    #: docs/operations.md, Durability. Ignored on PostgreSQL.
    sqlite_synchronous: str = "FULL"
    #: The key file of the private fields' data keys (default `<data_dir>/data-keys.json`,
    #: created with mode 0600 on first use; see docs/security.md).
    data_key_file: Path | None = None
    #: The data keys themselves, as the key file's JSON (`REGISTRY_DATA_KEYS`); wins over the
    #: key file. A secret: never printed.
    data_keys: str = field(default="", repr=False)
    # -- authentication (docs/security.md) ----------------------------------------------------
    #: The secret that signs our tokens and session cookies (`REGISTRY_AUTH_SECRET`, at least
    #: 32 characters); empty: the key file below. A secret: never printed.
    auth_secret: str = field(default="", repr=False)
    #: The signing secret's file (default `<data_dir>/auth-secret.key`, created 0600).
    auth_secret_file: Path | None = None
    #: `iss` and `aud` of the tokens we issue.
    token_issuer: str = "open-registry"
    token_audience: str = "open-registry-api"
    #: Lifetime of an API token and of a page session, in seconds.
    token_ttl_seconds: int = 900
    session_ttl_seconds: int = 28_800
    #: One-time codes: lifetime, wrong tries before the code is void and the identifier locked
    #: out, how long the lock-out lasts, and how many codes per identifier / per client address
    #: may be asked for within the window.
    otp_ttl_seconds: int = 300
    otp_max_attempts: int = 3
    otp_lockout_seconds: int = 900
    otp_rate_per_identifier: int = 3
    otp_rate_per_address: int = 20
    otp_rate_window_seconds: int = 900
    #: Sign-up by one-time code: a code also goes to an email or mobile number of no user, and
    #: verifying it creates a user with the `recipient` role and no recipient record yet, who
    #: then enrols (self-enrolment, docs/programme.md). Off: codes go to known users only.
    otp_signup: bool = False
    #: Password logins (failed or not) allowed per client address within the OTP window.
    login_rate_per_address: int = 30
    #: Failed password sign-ins allowed per username within the OTP window, whatever the
    #: address (a success starts the count again); past it the username is refused (429)
    #: until the window ends, even with the right password.
    login_rate_per_username: int = 10
    #: The peers trusted to say who the client is (reverse proxies): addresses or networks,
    #: comma-separated (`10.0.0.5, 192.168.0.0/16`; `*` trusts every peer). Only a request
    #: coming straight from one of them has its `forwarded_header` read, and the client is
    #: the right-most address there that is not itself trusted. Empty (the default): the
    #: header is never read and the client is the peer of the connection.
    forwarded_allow_ips: str = ""
    #: The header the trusted proxies set: `x-forwarded-for` or `forwarded` (RFC 7239). Only
    #: that one is read, since a proxy passes the other one on from the client unchanged.
    forwarded_header: str = "x-forwarded-for"
    #: How codes and other notices are sent when no plugin sends them: console (the code on
    #: the server's console, for development), smtp, or none.
    notification_sender: str = "console"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_from: str = ""
    smtp_starttls: bool = True
    #: External OpenID Connect provider (e.g. Keycloak): its issuer, JWKS URL and the audience
    #: its tokens must name; the claim paths (dotted) of roles, facility code and recipient id.
    oidc_issuer: str = ""
    oidc_jwks_url: str = ""
    oidc_audience: str = ""
    oidc_roles_claim: str = "realm_access.roles"
    oidc_facility_claim: str = "facility"
    oidc_recipient_claim: str = "recipient"
    oidc_algorithms: str = "RS256"
    #: How long fetched signing keys are trusted before they are fetched again, in seconds.
    oidc_jwks_cache_seconds: int = 3600
    #: Each plugin's own settings, by plugin name: `[plugins.certificates]` tables in the
    #: settings file, `REGISTRY_PLUGINS__CERTIFICATES__ISSUER=...` in the environment.
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, with the driver spelled out for PostgreSQL."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'registry.db').as_posix()}"
        return _with_driver(url)

    @property
    def sqlalchemy_read_url(self) -> str:
        """`database_read_url` with the driver spelled out ("" when there is none)."""
        return _with_driver(self.database_read_url) if self.database_read_url else ""

    @property
    def data_key_path(self) -> Path:
        """The data key file: `data_key_file`, or `data-keys.json` inside the data folder."""
        return self.data_key_file or self.data_dir / "data-keys.json"

    @property
    def auth_secret_path(self) -> Path:
        """The token signing secret's file: `auth_secret_file` or one in the data folder."""
        return self.auth_secret_file or self.data_dir / "auth-secret.key"

    @property
    def migrations_path(self) -> Path:
        """Where revisions live: `migrations_dir`, or `migrations` inside the data folder."""
        return self.migrations_dir or self.data_dir / "migrations"

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values changed."""
        return replace(self, **changes)

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        settings_file: Path | None = None,
        **overrides: Any,
    ) -> Settings:
        """Settings from a settings file and the environment, then `overrides`."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = settings_file or (
            Path(env[f"{ENV_PREFIX}SETTINGS"])
            if f"{ENV_PREFIX}SETTINGS" in env
            else Path("registry.toml")
        )
        if path.is_file():
            with path.open("rb") as fh:
                data = tomllib.load(fh)
            base = path.parent
            for key, value in data.items():
                values[key] = _coerce(key, value, base)
        elif settings_file is not None:
            raise FileNotFoundError(f"settings file {settings_file} does not exist")
        plugin_env = f"{ENV_PREFIX}PLUGINS__"
        for name, raw in env.items():
            if name.startswith(plugin_env) and name.count("__") == 2:
                plugin, key = name[len(plugin_env) :].lower().split("__")
                table = dict(values.get("plugins", {}))
                table[plugin] = {**table.get(plugin, {}), key: raw}
                values["plugins"] = table
        for f in fields(cls):
            if f.name == "plugins":
                continue
            env_value = env.get(ENV_PREFIX + f.name.upper())
            if env_value is not None:
                values[f.name] = _coerce(f.name, env_value, Path.cwd())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _with_driver(url: str) -> str:
    """A database URL with psycopg (3) named for PostgreSQL (`postgres://` accepted)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


_FIELD_TYPES = {f.name: f for f in fields(Settings)}


def _plugins(key: str, value: Any, base: Path) -> Any:
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise ValueError("setting 'plugins' must be tables: [plugins.<name>] key = value")
    return {str(k): dict(v) for k, v in value.items()}


def _folders(key: str, value: Any, base: Path) -> Any:
    items = value.split(os.pathsep) if isinstance(value, str) else list(value)
    return tuple(
        (base / p).resolve() if not Path(p).is_absolute() else Path(p)
        for p in items
        if str(p).strip()
    )


def _path(key: str, value: Any, base: Path) -> Any:
    p = Path(value)
    return p if p.is_absolute() else (base / p).resolve()


def _flag(key: str, value: Any, base: Path) -> Any:
    if isinstance(value, bool):
        return value
    flag = parse_flag(value, empty=False)
    if flag is None:
        raise ValueError(f"setting {key!r} must be true or false, got {value!r}")
    return flag


def _whole(key: str, value: Any, base: Path) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {key!r} must be a whole number, got {value!r}") from None


def _text(key: str, value: Any, base: Path) -> Any:
    return str(value)


#: the values of `sqlite_synchronous`
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")


def sqlite_synchronous(value: Any, key: str = "sqlite_synchronous") -> str:
    """`value` as a `sqlite_synchronous` setting (FULL or NORMAL, any case); ValueError else."""
    text = str(value).strip().upper()
    if text not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"setting {key!r} must be FULL or NORMAL, got {value!r}")
    return text


def _synchronous(key: str, value: Any, base: Path) -> Any:
    return sqlite_synchronous(value, key)


#: settings read their own way (relative paths are relative to the settings file's folder)
_BY_NAME: dict[str, Callable[[str, Any, Path], Any]] = {
    "plugins": _plugins,
    "schema_dirs": _folders,
    "data_dir": _path,
    "migrations_dir": _path,
    "data_key_file": _path,
    "auth_secret_file": _path,
    "sqlite_synchronous": _synchronous,
}
#: the others by the type of their default
_BY_TYPE: dict[type, Callable[[str, Any, Path], Any]] = {bool: _flag, int: _whole}


def _coerce(key: str, value: Any, base: Path) -> Any:
    f = _FIELD_TYPES.get(key)
    if f is None:
        known = ", ".join(sorted(_FIELD_TYPES))
        raise ValueError(f"unknown setting {key!r}; known settings: {known}")
    default = f.default if f.default is not field else None
    read = _BY_NAME.get(key) or _BY_TYPE.get(type(default), _text)
    return read(key, value, base)
