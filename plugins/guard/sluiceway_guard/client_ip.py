"""Who is the client: the peer address, or X-Forwarded-For behind a trusted proxy.

``X-Forwarded-For`` is believed only when the direct peer is a trusted proxy.
Then the client is the right-most address in it that is not itself a trusted
proxy: every proxy appends the address it received the request from, so the
entries right of that one were written by proxies we trust and the ones to its
left were written by the client, who can write anything. A malformed entry met
on the way falls back to the peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

__all__ = ["ClientAddress", "parse_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_XFF = b"x-forwarded-for"


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it: ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``,
    ``[2001:db8::1]`` or ``[2001:db8::1]:443``. IPv4-mapped IPv6 becomes IPv4.
    ``None`` if it is none of these."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and rest[1:].isdecimal())):
            return None
        text = host
    elif text.count(":") == 1:  # IPv4 with a port
        host, _, port = text.partition(":")
        if not port.isdecimal():
            return None
        text = host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddress:
    """``client(scope)``: the client's address as a string key, or ``None`` when the
    server reports no peer (a Unix socket). IPv6 clients are grouped by their
    ``/ipv6_prefix`` network (``2001:db8:1:2::/64``): one host usually owns a
    whole /64, so banning a single address would ban nothing."""

    def __init__(self, trusted_proxies: Iterable[str] = (), ipv6_prefix: int = 128) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(entry.strip(), strict=False) for entry in trusted_proxies
        )
        self.ipv6_prefix = ipv6_prefix

    def trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def __call__(self, scope: dict[str, Any]) -> str | None:
        client = scope.get("client")
        if not client or not client[0]:
            return None
        host: str = client[0]
        peer = parse_address(host)
        if peer is None:  # not an IP (a test client's name): use it as it is
            return host
        if self.networks and self.trusted(peer):
            forwarded = self.forwarded_client(scope)
            if forwarded is not None:
                peer = forwarded
        return self.key(peer)

    def forwarded_client(self, scope: dict[str, Any]) -> IPAddress | None:
        """The client named by X-Forwarded-For (all such headers, in order), or
        ``None`` when there is none or an entry walked over is malformed."""
        values = [value for name, value in scope.get("headers", ()) if name == _XFF]
        if not values:
            return None
        entries = b",".join(values).decode("latin-1").split(",")
        leftmost: IPAddress | None = None
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None:
                return None
            if not self.trusted(address):
                return address
            leftmost = address
        return leftmost  # every entry is a trusted proxy: the furthest one known

    def key(self, address: IPAddress) -> str:
        if isinstance(address, ipaddress.IPv6Address) and self.ipv6_prefix < 128:
            return str(ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False))
        return str(address)
