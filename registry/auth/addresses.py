"""The client address of a request, which rate limits and the audit log key on.

It is the peer of the connection, unless that peer is a trusted reverse proxy
(`forwarded_allow_ips`): then it is the right-most address of the proxy's header
(`forwarded_header`: `X-Forwarded-For`, or `Forwarded` of RFC 7239) that is not itself a trusted
proxy. Everything left of it was written by the client, who can put anything there; what the
trusted proxies appended to its right they saw themselves. With no trusted proxy configured (the
default) the headers are never read, so a client cannot choose the address it is counted as.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

HEADERS = ("x-forwarded-for", "forwarded")
#: addresses read from the right of a header at most (a proxy chain is never this long)
MAX_HOPS = 32
#: longest text kept of an entry that is no address (`unknown`, an obfuscated name)
MAX_TEXT = 64
_ADDRESS_LIKE = re.compile(r"[0-9A-Fa-f:.]+(?:/[0-9]+)?")
_FOR = re.compile(r"\s*for\s*=\s*(.*)", re.IGNORECASE)

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> IP | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalise(entry: str) -> str:
    """An address as written in a header (`[2001:db8::1]:4711`, `"192.0.2.1:80"`, `unknown`)
    as the bare address text (`2001:db8::1`, `192.0.2.1`), or the entry itself, shortened."""
    text = entry.strip().strip('"').strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    ip = _ip(text)
    if ip is not None:
        return str(ip)
    return "".join(ch for ch in text[:MAX_TEXT] if ch.isprintable()) or "unknown"


def _x_forwarded_for(values: Iterable[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part.strip()]


def _forwarded(values: Iterable[str]) -> list[str]:
    """The `for=` of each element. Quotes are not parsed as such: an unbalanced quote in what
    the client sent must not swallow what the proxy appended after it."""
    out = []
    for value in values:
        for element in value.split(","):
            if not element.strip():
                continue
            found = "unknown"
            for pair in element.split(";"):
                m = _FOR.fullmatch(pair)
                if m:
                    found = m.group(1)
            out.append(found)
    return out


class ClientAddresses:
    """Finds the client address of requests, given the trusted proxies."""

    def __init__(self, allow_ips: str = "", header: str = "x-forwarded-for"):
        name = header.strip().lower()
        if name not in HEADERS:
            raise ValueError(
                f"setting 'forwarded_header' must be one of {', '.join(HEADERS)}, got {header!r}"
            )
        self.header = name.encode("latin-1")
        self.any = False
        self.networks: list[Network] = []
        self.names: set[str] = set()
        for item in (i.strip() for i in allow_ips.split(",")):
            if not item:
                continue
            if item == "*":
                self.any = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if _ADDRESS_LIKE.fullmatch(item):
                    raise ValueError(
                        f"setting 'forwarded_allow_ips': {item!r} is not an address or network"
                    ) from None
                self.names.add(item)  # a peer that is no IP address (a unix socket's name)
        self.enabled = self.any or bool(self.networks or self.names)

    def trusted(self, host: str) -> bool:
        if self.any or host in self.names:
            return True
        ip = _ip(host)
        return ip is not None and any(ip in net for net in self.networks)

    def of(self, scope: Any) -> str:
        """The client address of an ASGI request `scope`."""
        client = scope.get("client")
        peer = str(client[0]) if client else "unknown"
        if not self.enabled or not self.trusted(peer):
            return peer
        values = [v.decode("latin-1") for k, v in scope.get("headers") or () if k == self.header]
        if not values:
            return peer
        hops = _x_forwarded_for(values) if self.header == b"x-forwarded-for" else _forwarded(values)
        chain = [normalise(h) for h in hops[-MAX_HOPS:]]
        for hop in reversed(chain):
            if not self.trusted(hop):
                return hop
        return chain[0] if chain else peer  # every hop a trusted proxy: the farthest one
