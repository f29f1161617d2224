"""DNS cookies (RFC 7873) with interoperable server cookies (RFC 9018).

A client sends an 8-octet client cookie in the EDNS COOKIE option; the server answers with it
and a 16-octet server cookie: version 1, three reserved octets, a 32-bit timestamp and
``SipHash-2-4(secret, client cookie | version | reserved | timestamp | client address)``. A
client that returns that server cookie proves it receives our replies at its address, so its
query cannot be a forged-source reflection: such queries bypass response rate limiting.

Every server of a zone shares the ``secret`` (the ``cookies:`` section of the config), so a
cookie from one is good at all. Rotation needs no flag day: set the new ``secret`` and keep the
old one as ``previous_secret``; cookies made with either are accepted and new ones are made with
the new one, so clients move over within the half hour after which a cookie is renewed.

What a query's COOKIE option gets (RFC 7873 5.2, RFC 9018 4.3):

    =========================================  ============================================
    option                                     response
    =========================================  ============================================
    under 8, 9-15 or over 40 octets            FORMERR
    client cookie only                         the answer, with a new server cookie
    server cookie wrong, too old (> 1 hour),   the answer, with a new server cookie (as if
    from the future (> 5 min), not version 1   only the client cookie had come)
    server cookie good                         the answer; the same server cookie while it
                                               is under half an hour old and made with the
                                               current secret, else a new one
    =========================================  ============================================

BADCOOKIE is sent only where rate limiting would otherwise slip a TC=1 reply to a client
without a good server cookie (RFC 7873 5.2.2 lets policy, "including rate limiting", choose
it): the reply carries a fresh server cookie and no answer, and the client retries with it.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from siphashc import siphash

OPTION = 10
MAX_AGE = 3600  # a server cookie older than this is not accepted (RFC 9018 4.3)
MAX_SKEW = 300  # nor one stamped further than this in the future
RENEW_AGE = 1800  # one older than this is replaced by a new one
ADDRESSES_LIMIT = 65_536  # client addresses whose packed form is remembered
_VERSION_1 = b"\x01\x00\x00\x00"
_pack_u32 = struct.Struct("!I").pack


class MalformedCookie(Exception):
    """A COOKIE option of a length RFC 7873 5.2.2 answers with FORMERR."""


@dataclass(frozen=True)
class CookieSettings:
    """The ``cookies:`` section of the config (docs/config.md)."""

    enabled: bool = True
    secret: str | None = None  # 32 hex digits; None: a random one per process
    previous_secret: str | None = None  # still accepted, never used for new cookies


class Cookies:
    """Checks the COOKIE option of queries and makes the one of their responses."""

    def __init__(self, settings: CookieSettings, clock: Callable[[], float] = time.time):
        self.secret = bytes.fromhex(settings.secret) if settings.secret else os.urandom(16)
        self.previous = (
            bytes.fromhex(settings.previous_secret) if settings.previous_secret else None
        )
        self.clock = clock
        self.addresses: dict[str, bytes] = {}
        # Counted per query with a COOKIE option: by what its server cookie was.
        self.results = {"client_only": 0, "valid": 0, "invalid": 0, "malformed": 0, "badcookie": 0}

    def check(self, data: bytes, start: int, length: int, client: str) -> tuple[bool, bytes]:
        """(whether the server cookie is good, the COOKIE option for the response) for the
        option whose data is ``data[start:start + length]``; raises ``MalformedCookie``."""
        if length < 8 or 8 < length < 16 or length > 40:
            self.results["malformed"] += 1
            raise MalformedCookie
        client_cookie = data[start : start + 8]
        address = self.addresses.get(client)
        if address is None:
            address = self._address(client)
        now = int(self.clock())
        if length == 8:
            self.results["client_only"] += 1
        else:
            server = data[start + 8 : start + length]
            if length == 24 and server[0] == 1:
                age = (now - int.from_bytes(server[4:8], "big")) & 0xFFFFFFFF
                if age >= 0x80000000:
                    age -= 0x100000000  # stamped in the future, or across the 2106 wrap
                if -MAX_SKEW <= age <= MAX_AGE:
                    head = client_cookie + server[:8]
                    if _hash(self.secret, head + address) == server[8:]:
                        self.results["valid"] += 1
                        if age <= RENEW_AGE:
                            return True, data[start - 4 : start + length]  # as it came
                        return True, self._option(client_cookie, address, now)
                    if (
                        self.previous is not None
                        and _hash(self.previous, head + address) == server[8:]
                    ):
                        self.results["valid"] += 1
                        return True, self._option(client_cookie, address, now)
            self.results["invalid"] += 1
        return False, self._option(client_cookie, address, now)

    def _option(self, client_cookie: bytes, address: bytes, now: int) -> bytes:
        head = _VERSION_1 + _pack_u32(now & 0xFFFFFFFF)
        server = head + _hash(self.secret, client_cookie + head + address)
        return b"\x00\x0a\x00\x18" + client_cookie + server

    def _address(self, client: str) -> bytes:
        host = client.partition("%")[0]
        try:
            packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        except OSError:
            packed = host.encode()
        if len(self.addresses) >= ADDRESSES_LIMIT:
            self.addresses.clear()
        self.addresses[client] = packed
        return packed


def _hash(key: bytes, message: bytes) -> bytes:
    return siphash(key, message).to_bytes(8, "little")


def server_cookie(secret: bytes, client_cookie: bytes, address: bytes, timestamp: int) -> bytes:
    """The RFC 9018 server cookie for these inputs (the test vectors of its appendix A)."""
    head = _VERSION_1 + _pack_u32(timestamp)
    return head + _hash(secret, client_cookie + head + address)
