"""The client's address, believing X-Forwarded-For only from configured proxies."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    trusted: Sequence[IPv4Network | IPv6Network],
) -> str:
    """Walk X-Forwarded-For from the right, skipping trusted proxies; the first other hop wins."""
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    address = peer or "unknown"
    if not trusted:
        return address
    for hop in [address, *reversed(hops)]:
        if not _is_trusted(hop, trusted):
            return hop
        address = hop
    return address


def _is_trusted(hop: str, trusted: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ip_address(hop)
    except ValueError:
        return False
    return any(ip in net for net in trusted)
