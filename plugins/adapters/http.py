"""HTTP for the adapters: one client per external system with timeouts, authentication (API key,
bearer token, basic, OAuth2 client credentials), HMAC request signatures, and failures sorted
into "try again later" (`Unavailable`: unreachable, timed out, 5xx, 429, a reply that is not
JSON) and "will never work" (`Refused`: other 4xx).

Secrets come from the settings table or, better, from an environment variable named there
(`client_secret_env = "MOH_CLIENT_SECRET"`); they are never logged or put in error messages.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from open_registry.core.plugin_settings import PluginSettingError

DEFAULT_TIMEOUT = 10.0
USER_AGENT = "open-registry-adapter"


#: an adapter setting that cannot be used; the message names it (never its secret value)
ConfigError = PluginSettingError


class Unavailable(Exception):
    """The external system did not answer usefully; trying again later may work."""


class Refused(Exception):
    """The external system refused the request (a 4xx answer); retrying will not help."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def setting_secret(config: Mapping[str, Any], key: str, where: str) -> str | None:
    """A secret from `key` or from the environment variable named by `<key>_env`."""
    env_name = config.get(f"{key}_env")
    if env_name:
        value = os.environ.get(str(env_name))
        if not value:
            raise ConfigError(f"{where}.{key}_env names {env_name}, which is not set")
        return value
    value = config.get(key)
    return str(value) if value not in (None, "") else None


def hmac_sha256(secret: str | bytes, message: bytes) -> str:
    """Hex HMAC-SHA256 of `message`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signature_header(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>` (the time defeats replays)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={hmac_sha256(secret, f'{t}.'.encode() + body)}"


def verify_signature(
    secret: str | bytes, body: bytes, header: str, *, tolerance: int = 300, now: int | None = None
) -> bool:
    """Whether `header` (as `signature_header` makes it) signs `body` and is recent."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    current = int(time.time()) if now is None else now
    if abs(current - t) > tolerance:
        return False
    expected = hmac_sha256(secret, f"{t}.".encode() + body)
    return hmac.compare_digest(expected, parts.get("v1", ""))


class _OAuth2(httpx.Auth):
    """OAuth2 client credentials: a token fetched on first use, cached until shortly before it
    expires, fetched again once when the server answers 401."""

    def __init__(self, token_url: str, client_id: str, secret: str, scope: str | None):
        self.token_url = token_url
        self.client_id = client_id
        self.secret = secret
        self.scope = scope
        self._token: str | None = None
        self._until = 0.0
        self._lock = threading.Lock()

    def _fetch(self) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        basic = base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
        return httpx.Request(
            "POST", self.token_url, data=data, headers={"Authorization": f"Basic {basic}"}
        )

    def auth_flow(self, request: httpx.Request) -> Any:
        for attempt in range(2):
            with self._lock:
                token = self._token if time.monotonic() < self._until else None
            if token is None:
                reply = yield self._fetch()
                if reply.status_code >= 400:
                    raise Refused(
                        f"the token endpoint answered {reply.status_code}", reply.status_code
                    )
                try:
                    body = reply.read() and reply.json()
                    token = str(body["access_token"])
                    ttl = float(body.get("expires_in", 300))
                except Exception:
                    raise Unavailable("the token endpoint's reply has no access_token") from None
                with self._lock:
                    self._token, self._until = token, time.monotonic() + max(ttl - 30, 1)
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code != 401 or attempt:
                return
            with self._lock:
                self._token = None


_TOKENS: dict[tuple[Any, ...], _OAuth2] = {}
_TOKENS_LOCK = threading.Lock()


def make_auth(config: Mapping[str, Any] | None, where: str) -> tuple[httpx.Auth | None, dict]:
    """An httpx auth and extra headers from an `auth` table:

    `{type = "api-key", header = "X-API-Key", key_env = "..."}`, `{type = "bearer", token_env}`,
    `{type = "basic", username, password_env}`, `{type = "oauth2", token_url, client_id,
    client_secret_env, scope}`, or DHIS2's `{type = "apitoken", token_env}`.
    """
    if not config:
        return None, {}
    kind = str(config.get("type", ""))
    where = f"{where}.auth"
    if kind == "api-key":
        key = setting_secret(config, "key", where)
        if not key:
            raise ConfigError(f"{where}.key (or key_env) is needed for an api-key")
        return None, {str(config.get("header", "X-API-Key")): key}
    if kind in ("bearer", "apitoken"):
        token = setting_secret(config, "token", where)
        if not token:
            raise ConfigError(f"{where}.token (or token_env) is needed")
        scheme = "Bearer" if kind == "bearer" else "ApiToken"
        return None, {"Authorization": f"{scheme} {token}"}
    if kind == "basic":
        password = setting_secret(config, "password", where) or ""
        return httpx.BasicAuth(str(config.get("username", "")), password), {}
    if kind == "oauth2":
        secret = setting_secret(config, "client_secret", where)
        if not config.get("token_url") or not config.get("client_id") or not secret:
            raise ConfigError(f"{where} needs token_url, client_id and client_secret(_env)")
        scope = config.get("scope")
        token_key = (
            str(config["token_url"]), str(config["client_id"]), hmac_sha256(secret, b""), scope
        )
        with _TOKENS_LOCK:  # one token per client for the process, reused until it expires
            auth = _TOKENS.get(token_key)
            if auth is None:
                auth = _TOKENS[token_key] = _OAuth2(token_key[0], token_key[1], secret, scope)
        return auth, {}
    raise ConfigError(f"{where}.type must be api-key, bearer, basic, oauth2 or apitoken")


#: the whole exchange of one request must be over within this many timeouts of its start
EXCHANGE_TIMEOUTS = 2


def request_seconds(timeout: float, *, oauth2: bool = False) -> float:
    """The longest one `Http.request` with `timeout` may take: the exchange is given up twice the
    timeout after its start, and a network wait in progress then ends within one more timeout
    (3 x timeout); fetching an OAuth2 token first (once per token lifetime) is a request of its
    own before it (6 x timeout). A delivery's lease is tied to it (`deliveries.timed`)."""
    one = (EXCHANGE_TIMEOUTS + 1) * timeout
    return 2 * one if oauth2 else one


def config_seconds(config: Mapping[str, Any], where: str, *, requests: int = 1) -> float:
    """`request_seconds` for an adapter's settings table (its `timeout`, its `auth` type), times
    `requests` made one after another by one send."""
    auth = config.get("auth")
    oauth2 = isinstance(auth, Mapping) and auth.get("type") == "oauth2"
    return requests * request_seconds(_timeout(config, where), oauth2=oauth2)


def _timeout(config: Mapping[str, Any], where: str) -> float:
    try:
        value = float(config.get("timeout", DEFAULT_TIMEOUT))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.timeout must be a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{where}.timeout must be more than 0 seconds")
    return value


@functools.cache
def _verifying_tls() -> ssl.SSLContext:
    """The TLS settings that check servers' certificates, made once per process and shared by
    every client: httpx would read the CA bundle again for each (~20-30 ms of CPU per client,
    and a client is made per delivery run). `SSL_CERT_FILE`/`SSL_CERT_DIR` are honoured as by
    httpx, read when the first client is made."""
    return httpx.create_ssl_context(verify=True, trust_env=True)


class Http:
    """A client for one external system: `get_json`, `send`; failures as Unavailable/Refused."""

    def __init__(
        self,
        config: Mapping[str, Any],
        where: str,
        *,
        transport: httpx.BaseTransport | None = None,
    ):
        self.where = where
        self.timeout = _timeout(config, where)
        auth, headers = make_auth(config.get("auth"), where)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        headers.update({str(k): str(v) for k, v in (config.get("headers") or {}).items()})
        self.client = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            headers=headers,
            auth=auth,
            transport=transport,
            follow_redirects=False,
            verify=_verifying_tls() if config.get("verify_tls", True) else False,
        )

    def close(self) -> None:
        self.client.close()

    @property
    def longest_seconds(self) -> float:
        """The longest one `request` may take (`request_seconds`): what a delivery's lease
        must cover."""
        return request_seconds(self.timeout, oauth2=isinstance(self.client.auth, _OAuth2))

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request; `Unavailable` when there is no usable answer, `Refused` on 4xx.

        Connecting, sending and the answer's head are each bounded by the timeout (httpx), and
        the whole exchange must be over within twice the timeout of its start: the answer's body
        is read as it arrives and given up past that, so a server dribbling a long answer cannot
        hold the sender longer than `longest_seconds`."""
        started = time.monotonic()
        try:
            request = self.client.build_request(method, url, **kwargs)
            response = self.client.send(request, stream=True)
            try:
                chunks = []
                deadline = started + EXCHANGE_TIMEOUTS * self.timeout
                if time.monotonic() > deadline:  # the head alone took that long
                    raise httpx.ReadTimeout("the answer took too long", request=request)
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the answer took too long", request=request)
                # what `Response.read()` does, with the deadline checked between the chunks
                response._content = b"".join(chunks)
            finally:
                response.close()
        except httpx.TimeoutException:
            raise Unavailable(f"{_host(url)} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"{_host(url)} cannot be reached: {type(exc).__name__}") from None
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise Unavailable(f"{_host(url)} answered {status}")
        if status >= 400 and status != 404:
            raise Refused(f"{_host(url)} refused the request: {status} {_short(response)}", status)
        return response

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        """The JSON body of a GET, or None for a 404."""
        response = self.request("GET", url, params=params)
        if response.status_code == 404:
            return None
        return parse_json(response, url)

    def send(
        self,
        method: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> httpx.Response:
        """Send `body` (already serialised, so signatures cover the exact bytes)."""
        response = self.request(method, url, content=body, headers=dict(headers))
        if response.status_code == 404:
            raise Refused(f"{_host(url)} answered 404 (is the address right?)", 404)
        return response


def parse_json(response: httpx.Response, url: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise Unavailable(f"{_host(url)} answered with something that is not JSON") from None


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host or url
    except Exception:
        return "the server"


def _short(response: httpx.Response) -> str:
    text = response.text[:200].replace("\n", " ")
    return text
