"""Which addresses ``http_fetch`` may connect to: the SSRF guard, as pure functions of an IP or a name.

Refused unless ``tools.http_allow_private``: loopback, private (RFC 1918, ULA ``fc00::/7``), link-local
(``169.254/16``, ``fe80::/10``), shared/CGNAT (``100.64/10``), unspecified, site-local, documentation and
every other non-global range of the IANA special-purpose registries. Always refused: multicast,
broadcast/reserved, and cloud metadata endpoints (by address and by name). An address inside one of
``tools.http_allow_cidrs`` is allowed whatever its kind: that list is the deliberate, explicit exception.

IPv6 forms that embed an IPv4 address (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``) are judged by the embedded address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TypeAlias

from config.errors import ConfigError
from config.settings import ToolsSettings

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

#: instance-metadata services of the big clouds (AWS, GCP, Azure, OpenStack, Alibaba, ECS tasks)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2", "169.254.169.253")
)
METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class AddressRefused(Exception):
    """The URL's host or one of its addresses may not be fetched; the message says why (user-safe)."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, tools: ToolsSettings) -> AddressPolicy:
        return cls(tools.http_allow_private, parse_networks(tools.http_allow_cidrs))

    def check_host(self, host: str) -> None:
        """Refuse names of metadata services before any lookup (they resolve only inside clouds)."""
        name = host.lower().rstrip(".")
        if name in METADATA_HOSTS:
            raise AddressRefused(f"{host} is a cloud metadata service and is never fetched")

    def check_address(self, address: str | IPAddress) -> IPAddress:
        """Return the address if it may be connected to, else raise :class:`AddressRefused`."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if any(ip in net for net in self.allowed_networks):
            return ip
        problem = _problem(_embedded_v4(ip) or ip, self.allow_private)
        if problem:
            raise AddressRefused(f"{ip} is {problem}")
        return ip


def parse_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """``tools.http_allow_cidrs`` entries as networks; a bad entry is a ConfigError naming it."""
    nets: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            reason = f"{cidr!r} is not an IP network (e.g. 10.1.2.0/24 or fd00:1::/64)"
            raise ConfigError("tools.http_allow_cidrs", reason) from None
    return tuple(nets)


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _problem(ip: IPAddress, allow_private: bool) -> str:
    """Why ``ip`` is refused, or "" when it is allowed."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address and is never fetched"
    if ip.is_multicast:
        return "a multicast address"
    # IPv4 only: IPv6's "reserved" ::/8 would also catch ::1, which is loopback (handled below).
    if isinstance(ip, ipaddress.IPv4Address) and (ip.is_reserved or ip == _BROADCAST):
        return "a reserved or broadcast address"
    if allow_private:
        return ""
    if ip.is_loopback:
        return "a loopback address (set tools.http_allow_private to allow it)"
    if ip.is_link_local:
        return "a link-local address (set tools.http_allow_private to allow it)"
    if ip.is_unspecified:
        return "an unspecified address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address (set tools.http_allow_private to allow it)"
    if not ip.is_global:
        return "a private or internal address (set tools.http_allow_private to allow it)"
    return ""
