"""Is an address public? Our own table, so the answer does not depend on Python's patch level.

``ipaddress.is_global`` changed between patch releases (3.11.7 calls NAT64
``64:ff9b::/96``, 6to4 ``2002::/16`` and IPv4-compatible ``::a.b.c.d`` global, so
``http://[64:ff9b::7f00:1]/`` would reach loopback through a NAT64 gateway). Here an
IPv6 address that embeds an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by
the IPv4 address it carries; otherwise it must be global unicast (``2000::/3``) and
outside the special-purpose blocks of the IANA registries. When in doubt: not public.
"""

from __future__ import annotations

import ipaddress

_V4_SPECIAL = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
))
_V6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_V6_SPECIAL = tuple(ipaddress.ip_network(n) for n in (
    "2001::/23",      # IETF protocol assignments, incl. Teredo 2001::/32 (an obfuscated IPv4 inside)
    "2001:db8::/32",  # documentation
    "3fff::/20",      # documentation (RFC 9637)
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPAT = ipaddress.ip_network("::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64 well-known prefix, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    n = int(ip)
    if ip in _NAT64 or (ip in _COMPAT and n > 1):  # ::, ::1 are not IPv4-compatible addresses
        return ipaddress.IPv4Address(n & 0xFFFF_FFFF)
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((n >> 80) & 0xFFFF_FFFF)
    return None


def is_public(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for a globally routable unicast address (an embedded IPv4 judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%")[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            return is_public(v4)
        return ip in _V6_GLOBAL_UNICAST and not any(ip in n for n in _V6_SPECIAL)
    return not any(ip in n for n in _V4_SPECIAL) and ip != ipaddress.IPv4Address("255.255.255.255")


def unwrap(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address to judge and show: an embedded IPv4 address if there is one."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        return embedded_ipv4(ip) or ip
    return ip


__all__ = ["embedded_ipv4", "is_public", "unwrap"]
