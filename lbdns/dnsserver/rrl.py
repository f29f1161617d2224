"""Response rate limiting (RRL), as NSD's ``rrl-*`` and Knot's ``mod-rrl`` do it.

A UDP query's source address can be forged, so a flood of queries "from" a victim turns the
server into an amplifier aimed at it. RRL caps the responses sent to one client network (a /24
of IPv4, a /56 of IPv6 by default) per response class with a token bucket: ``rate`` responses a
second, up to ``burst`` at once. A response over the limit is dropped, except every ``slip``-th,
which is sent as an empty TC=1 reply, so that a real client behind a limited network retries
over TCP (which cannot be forged and is never limited). A query with a valid DNS server cookie
(RFC 7873) proves its source and bypasses RRL (Knot's rule; ``Answerer`` decides that).

Classes, each with a bucket of its own per network:

    ====== ==============================================================
    class  response
    ====== ==============================================================
    answer NOERROR with records in the answer section
    nodata NOERROR without (NODATA, and the empty TC=1 replies)
    nxdomain NXDOMAIN
    error  any other rcode (REFUSED, FORMERR, NOTIMP, SERVFAIL, NOTAUTH)
    big    any response of ``big_size`` octets or more (the amplifiers)
    ====== ==============================================================

Each bucket is kept as one number, its theoretical arrival time (the generic cell rate
algorithm, GCRA, which is a token bucket: an answer is allowed while that time is at most
``burst - 1`` intervals of ``1 / rate`` ahead of now, and each allowed answer moves it one
interval on). The per-query cost is one dict lookup by the client's address, a clock reading and
two float comparisons; with
``rrl.enabled: false`` (the default) the answerer holds no limiter and pays one ``is None``.
Tables are capped: past ``max_networks`` networks (or twice as many addresses) both tables start
over, which forgets every bucket (counted in ``resets``).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from time import monotonic

CLASSES = ("answer", "nodata", "nxdomain", "error", "big")
ANSWER, NODATA, NXDOMAIN, ERROR, BIG = range(5)
TC = 0x02  # in the third octet of the header
_SLIP = len(CLASSES)  # index of the slip counter in a network's state
_EXEMPT: list[float] = []  # the state of a whitelisted client: never limited


@dataclass(frozen=True)
class RrlSettings:
    """The ``rrl:`` section of the config (docs/config.md)."""

    enabled: bool = False
    rate: float = 100.0  # responses per second per network and class
    burst: float = 0.0  # bucket size; 0 = one second's worth (``rate``)
    slip: int = 2  # every slip-th limited response is sent TC=1 (0 = none, 1 = all)
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    big_size: int = 1024  # octets from which a response is of class "big"
    whitelist: tuple[str, ...] = ()  # networks never limited, e.g. 192.0.2.0/24
    max_networks: int = 20_000  # about 10 MB of buckets at most


class RateLimiter:
    """Token buckets per (client network, response class)."""

    def __init__(self, settings: RrlSettings, clock=monotonic):
        self.settings = settings
        self.rate = float(settings.rate)
        self.burst = float(settings.burst or settings.rate)
        self.slip = settings.slip
        self.big = settings.big_size
        self.clock = clock
        self.whitelist = tuple(ipaddress.ip_network(n, strict=False) for n in settings.whitelist)
        # address -> its network's state: the theoretical arrival time per class (a bucket is
        # full when that time has passed), then the slip counter.
        self.clients: dict[str, list[float]] = {}
        self.networks: dict[str, list[float]] = {}
        self.dropped = [0] * len(CLASSES)
        self.slipped = [0] * len(CLASSES)
        self.resets = 0
        self.allow = self._allow_function()

    def _allow_function(self):
        """``allow(response, client)``: True to send ``response``; False to send it as TC=1
        (a slip); None to drop it. Also sets ``charge(bucket, client)``, the same for a
        response whose ``bucket_of`` is known (the answerer keeps it with repeated answers).
        Closures over locals: this runs for every UDP answer, and attribute look-ups would be
        a third of its cost."""
        clients = self.clients
        new_state = self._state
        interval = 1.0 / self.rate
        # A bucket of ``burst`` answers: allowed while the arrival time is at most burst - 1
        # intervals ahead (a hair more, so that float sums of intervals keep the last one).
        tolerance = (self.burst - 1.0) * interval + 1e-9
        big, slip = self.big, self.slip
        clock = self.clock
        dropped, slipped = self.dropped, self.slipped
        bucket_of = _bucket_of

        def charge(i: int, client: str) -> bool | None:
            state = clients.get(client)
            if state is None:
                state = new_state(client)
            if state is _EXEMPT:
                return True
            now = clock()
            due = state[i]
            if due < now:  # a full bucket
                state[i] = now + interval
                return True
            if due - now <= tolerance:
                state[i] = due + interval
                return True
            if slip:
                state[_SLIP] += 1
                if state[_SLIP] >= slip:
                    state[_SLIP] = 0
                    slipped[i] += 1
                    return False
            dropped[i] += 1
            return None

        def allow(response: bytes, client: str) -> bool | None:
            return charge(bucket_of(response, big), client)  # off the hot path (cookies)

        self.charge = charge
        # The same, for the compiled UDP loop (lbdns/dnsserver/_udpfast.c: gcra), which takes
        # the step itself for clients whose state exists and calls charge for the others.
        self.compiled = (
            charge,
            clients,
            clock,
            interval,
            tolerance,
            slip,
            _SLIP,
            dropped,
            slipped,
            _EXEMPT,
        )
        return allow

    def _state(self, client: str) -> list[float]:
        try:
            address = ipaddress.ip_address(client.partition("%")[0])
        except ValueError:
            address = None
        if address is not None and any(address in network for network in self.whitelist):
            state = _EXEMPT
        else:
            if address is None:
                key = client
            else:
                bits = (
                    self.settings.ipv4_prefix if address.version == 4 else self.settings.ipv6_prefix
                )
                key = str(ipaddress.ip_network(f"{address}/{bits}", strict=False))
            state = self.networks.get(key)
            if state is None:
                if len(self.networks) >= self.settings.max_networks:
                    self._reset()
                # A full bucket for every class: a new client starts with its burst.
                state = [0.0] * len(CLASSES) + [0.0]
                self.networks[key] = state
        if len(self.clients) >= 2 * self.settings.max_networks:
            self._reset()
        self.clients[client] = state
        return state

    def _reset(self) -> None:
        self.clients.clear()
        self.networks.clear()
        self.resets += 1


def bucket_of(response: bytes, big: int) -> int:
    """The class of ``response`` (its index in a network's state)."""
    if len(response) >= big:
        return BIG
    rcode = response[3] & 0xF
    if rcode:
        return NXDOMAIN if rcode == 3 else ERROR
    return ANSWER if response[7] or response[6] else NODATA


_bucket_of = bucket_of


def truncated(response: bytes) -> bytes:
    """``response`` cut to its header and question with TC=1 (a slip): a real client asks
    again over TCP; a forged source gets no more octets than it sent."""
    if len(response) < 12:
        return response
    qdcount = (response[4] << 8) | response[5]
    end = 12
    if qdcount:
        size = len(response)
        while end < size and response[end]:
            end += response[end] + 1
        end += 5
        if end > size:
            return response[:2] + bytes((response[2] | TC, response[3])) + b"\x00" * 8
    opt = b""
    arcount = (response[10] << 8) | response[11]
    if arcount and response[-11:-8] == b"\x00\x00\x29":  # our own option-less OPT, last
        opt = response[-11:]
    counts = struct.pack("!HHHH", 1 if qdcount else 0, 0, 0, 1 if opt else 0)
    return response[:2] + bytes((response[2] | TC, response[3])) + counts + response[12:end] + opt
