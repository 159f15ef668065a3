"""Who sent a signup: the client's address behind trusted proxies, the key the per-client limit
counts it under, and what the consent record keeps of it (`signup.record_ip`)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_USER_AGENT = 500  # characters kept of the User-Agent header


def parse_address(text: str | None) -> IPAddress | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:192.0.2.1 is 192.0.2.1
    return address


def client_address(
    remote_addr: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> IPAddress | None:
    """The client's address: the connection's peer, unless that is a trusted proxy; then the
    X-Forwarded-For entries are read from the right (the nearest hop first), past every trusted
    proxy. The first hop that is not trusted is the client: anything left of it was written by
    the client and proves nothing. An entry that is not an address ends the walk there."""
    peer = parse_address(remote_addr)
    if peer is None or not _trusted(peer, trusted):
        return peer
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    client = peer
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return client
        client = address
        if not _trusted(address, trusted):
            return address
    return client


def _trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_network(address: IPAddress | None) -> str:
    """What the per-client limit counts: one IPv4 address, or one IPv6 /64 (a single home or
    host is usually given a whole /64, so counting its addresses one by one limits nothing)."""
    if address is None:
        return "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def client_key(secret: str, address: IPAddress | None) -> str:
    """The limit's key: a keyed hash of the client's network, so the table of recent signups
    never holds an IP address."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    mac.update(b"newsletter.signup-client:" + client_network(address).encode("ascii"))
    return mac.hexdigest()[:32]


def recorded_ip(address: IPAddress | None, mode: str) -> str | None:
    """The client's address as the consent record keeps it: `full`, `truncated` (IPv4 to its
    /24, IPv6 to its /48: the network, not the person) or `none`."""
    if address is None or mode == "none":
        return None
    if mode == "full":
        return str(address)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def user_agent(value: str | None) -> str | None:
    """The User-Agent as kept: printable characters only, at most MAX_USER_AGENT of them."""
    if not value:
        return None
    kept = "".join(ch for ch in value if ch.isprintable())[:MAX_USER_AGENT].strip()
    return kept or None
