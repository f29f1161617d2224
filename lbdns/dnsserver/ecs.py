"""EDNS Client Subnet (RFC 7871), the authoritative side.

A resolver that sends ECS tells which network its client is in, and caches the answer for the
SCOPE PREFIX-LENGTH the answer gives back: one cache entry per client subnet instead of one for
all its clients. For a farm that turns one big herd (everyone behind the resolver) into one herd
per subnet, and the farm keys its herd estimates by subnet.

The rules kept here (RFC 7871 section numbers):

* The option is FAMILY (1 IPv4, 2 IPv6), SOURCE PREFIX-LENGTH, SCOPE PREFIX-LENGTH, ADDRESS
  (6). An unknown FAMILY, a SOURCE longer than the family's address, ADDRESS octets that are
  not exactly ``ceil(SOURCE / 8)``, ADDRESS bits set beyond SOURCE, a SCOPE other than 0 in a
  query, an option shorter than 4 octets, or more than one ECS option: FORMERR (6, 7.1.2,
  7.2.1 "SHOULD return FORMERR").
* The response copies FAMILY, SOURCE PREFIX-LENGTH and ADDRESS from the query (7.2.1) and sets
  SCOPE: for a farm answer ``min(SOURCE, the farm's scope)`` (never more specific than the
  client said: RFC 7871 11.1 privacy advice), 0 for everything that does not depend on the
  client (static records, negative answers) and for SOURCE 0 (the client opted out: the answer
  is for everyone, and the herd is the resolver's own).
* A query without ECS gets a response without ECS (7.2.1).

Only the parse and the reply option are here; ``wire.py`` finds the OPT record and assembles.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

OPTION_CODE = 8
_OPT_TYPE = 41
_FAMILIES = {1: 4, 2: 16}  # FAMILY -> address octets
_unpack_rr = struct.Struct("!HHIH").unpack_from
_unpack_option = struct.Struct("!HH").unpack_from


class EcsError(ValueError):
    """A malformed ECS option: the query is answered FORMERR."""


@dataclass(frozen=True, slots=True)
class ClientSubnet:
    family: int  # 1 IPv4, 2 IPv6
    source: int  # SOURCE PREFIX-LENGTH
    address: bytes  # the ADDRESS octets as sent (ceil(source / 8) of them)

    def scope(self, v4: int | None, v6: int | None) -> int:
        """The SCOPE PREFIX-LENGTH of a farm answer with the farm's scopes (None: off)."""
        limit = v4 if self.family == 1 else v6
        if limit is None or self.source == 0:
            return 0
        return min(self.source, limit)

    def key(self, scope: int) -> str:
        """The herd key of the clients this answer is cached for: the subnet of ``scope``."""
        size = _FAMILIES[self.family]
        packed = self.address + b"\x00" * (size - len(self.address))
        address = ipaddress.ip_address(packed)
        network = ipaddress.ip_network(f"{address}/{scope}", strict=False)
        return f"ecs:{network}"

    def option(self, scope: int) -> bytes:
        """The ECS option of the response: the query's, with SCOPE set."""
        body = struct.pack("!HBB", self.family, self.source, scope) + self.address
        return struct.pack("!HH", OPTION_CODE, len(body)) + body


def parse(option: bytes) -> ClientSubnet:
    """One ECS option's data (after code and length); raises EcsError when malformed."""
    if len(option) < 4:
        raise EcsError("ECS option shorter than 4 octets")
    family, source, scope = struct.unpack_from("!HBB", option)
    size = _FAMILIES.get(family)
    if size is None:
        raise EcsError(f"unknown ECS family {family}")
    if source > size * 8:
        raise EcsError(f"ECS source prefix /{source} is longer than the family's addresses")
    if scope != 0:
        raise EcsError("ECS scope prefix must be 0 in a query")
    address = option[4:]
    if len(address) != (source + 7) // 8:
        raise EcsError("ECS address octets do not match the source prefix length")
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise EcsError("ECS address has bits set beyond the source prefix length")
    return ClientSubnet(family, source, bytes(address))


def client_subnet(data: bytes, pos: int, count: int) -> ClientSubnet | None:
    """The ECS option of the OPT record in the ``count`` records from ``pos`` (the additional
    section, already walked and checked by the caller), or None; raises EcsError."""
    size = len(data)
    found: ClientSubnet | None = None
    for _ in range(count):
        while pos < size:  # the owner name
            length = data[pos]
            if length == 0:
                pos += 1
                break
            if length >= 0xC0:
                pos += 2
                break
            pos += length + 1
        rtype, _, _, rdlength = _unpack_rr(data, pos)
        pos += 10
        end = pos + rdlength
        if rtype == _OPT_TYPE:
            at = pos
            while at + 4 <= end:
                code, length = _unpack_option(data, at)
                at += 4
                if at + length > end:
                    raise EcsError("EDNS option runs past the OPT record")
                if code == OPTION_CODE:
                    if found is not None:
                        raise EcsError("more than one ECS option")
                    found = parse(data[at : at + length])
                at += length
        pos = end
    return found
