"""Who the client of a request is, for rate limits and logs.

The socket peer, unless that peer is one of APPWARDEN_TRUSTED_PROXIES: then its X-Forwarded-For
is believed, from the right, up to the first address that is not a trusted proxy (the left-most
entries are whatever the client chose to send). The gate never uses this: it judges its proxy by
the socket peer alone (web.gate).
"""

from __future__ import annotations

import ipaddress

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(scope: Scope, networks: tuple[Network, ...]) -> str | None:
    """The client of a request: the socket peer, or, when the peer is a trusted proxy, the
    right-most address of X-Forwarded-For that is not a trusted proxy (the left-most entries
    are whatever the client chose to send)."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    if peer is None or not networks or not _is_trusted(peer, networks):
        return peer
    forwarded: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            forwarded += [p.strip() for p in bytes(value).decode("latin-1").split(",")]
    for hop in reversed(forwarded):
        if not hop:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a hop we cannot read: believe nothing further left
        if not _is_trusted(hop, networks):
            return hop
    return peer
