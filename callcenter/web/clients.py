"""Who is on the other end of a request: the client's address and whether it came over HTTPS.

Behind the HTTPS reverse proxy the README asks for, every request's peer is the proxy. The proxy says
who the client was (``X-Forwarded-For``/``Forwarded``) and which scheme it used
(``X-Forwarded-Proto``) — but anyone can send those headers, so they are believed only when the peer
itself is one of ``[web] trusted_proxies``, and then only as far as the chain of trusted hops goes:
reading the forwarded addresses from the right, the first one that is not a trusted proxy is the
client (anything to its left was written by the client and proves nothing). Without a trusted proxy
configured, the peer's address is the client's, whatever the headers say.

Login throttling keys on :func:`client_group`: an IPv6 client owns a whole /64 (one router
advertisement hands a single host 2^64 addresses), so an address is grouped by its /64.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import hdrs, web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> Address | None:
    """An address as a proxy writes it (``203.0.113.5``, ``203.0.113.5:4711``, ``[2001:db8::1]:443``,
    ``"[2001:db8::1]"``), or None for anything else (``unknown``, an obfuscated ``_hidden`` node)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_group(address: str) -> str:
    """The unit login throttling counts per client: an IPv4 address, or an IPv6 address's /64."""
    ip = _ip(address)
    if ip is None:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ClientResolver:
    """Reads client address and scheme from a request, believing forwarded headers only from
    ``trusted`` proxies; ``force_secure`` treats every request as HTTPS (``[web] secure_cookie``)."""

    def __init__(self, trusted: Iterable[str] = (), *, force_secure: bool = False) -> None:
        self.trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(t.strip(), strict=False) for t in trusted)
        self.force_secure = force_secure

    def _trusted(self, ip: Address | None) -> bool:
        return ip is not None and any(ip.version == net.version and ip in net for net in self.trusted)

    def _peer(self, request: web.Request) -> tuple[str, Address | None]:
        peer = None
        if request.transport is not None:
            peername = request.transport.get_extra_info("peername")
            if isinstance(peername, tuple | list) and peername:
                peer = str(peername[0])
        peer = peer or request.remote or "unknown"
        return peer, _ip(peer)

    @staticmethod
    def _forwarded_for(request: web.Request) -> list[str]:
        """The proxies' record of the hops, oldest first: RFC 7239 ``Forwarded`` when present, else
        ``X-Forwarded-For`` (every header line, in order)."""
        if hdrs.FORWARDED in request.headers:
            return [str(entry.get("for", "")) for entry in request.forwarded]
        hops: list[str] = []
        for line in request.headers.getall(hdrs.X_FORWARDED_FOR, []):
            hops.extend(part.strip() for part in line.split(","))
        return hops

    def address(self, request: web.Request) -> str:
        """The client's address (the peer's unless the peer is a trusted proxy)."""
        peer, current = self._peer(request)
        if not self._trusted(current):
            return peer
        found = str(current)
        for hop in reversed(self._forwarded_for(request)):
            ip = _ip(hop)
            if ip is None:  # garbage where an address should be: the last good hop is all we know
                break
            found = str(ip)
            if not self._trusted(ip):
                break
        return found

    def is_https(self, request: web.Request) -> bool:
        """Whether the browser's connection is HTTPS: our own TLS, a trusted proxy's
        ``X-Forwarded-Proto``/``Forwarded: proto=``, or ``force_secure``."""
        if self.force_secure or request.secure:
            return True
        _peer, ip = self._peer(request)
        if not self._trusted(ip):
            return False
        if hdrs.FORWARDED in request.headers:
            protos = [str(entry.get("proto", "")) for entry in request.forwarded]
        else:
            protos = [p.strip() for line in request.headers.getall(hdrs.X_FORWARDED_PROTO, []) for p in line.split(",")]
        return bool(protos) and protos[-1].lower() == "https"


__all__ = ["ClientResolver", "client_group"]
