"""The DNS wire path: query bytes in, response bytes out. Shared by UDP and TCP.

Most queries never reach a full parse or pack. A response is mostly bytes that change only when
the zones or a farm's membership change; per query only the ID, two flag bits (RD, CD), the echoed
question (kept byte for byte, mixed case included) and the EDNS OPT record differ. So:

* ``respond`` parses the header, the question and an OPT record by hand (a few microseconds);
* it looks up a ``Template`` by the lowercased question; names in the template point at offset 12,
  where the echoed question sits, so the query's own question bytes can be spliced in;
* for a farm name it asks the farm which hosts to name, and looks up the template for that choice;
* on a miss it resolves with ``resolve`` and packs a template with dnslib, once.

A keyed farm's names (``<key>.<farm>``, see ``resolve``) are farm questions with a key: the
farm's ``choose_key`` answers them. A farm keyed by client subnet takes the key from the
query's EDNS Client Subnet option (RFC 7871) when it has one, and then echoes the option with
the scope the answer holds for (/24 or /56 at most); else from the resolver's address.

Refusals come in a fixed order, each counted: drop what has no header or is a response; FORMERR
for a malformed question or OPT; NOTIMP for opcodes other than QUERY; BADVERS for EDNS > 0;
REFUSED for other classes, zone transfers and names outside our zones.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import AAAA as AAAA_RDATA
from dnslib import CLASS, QTYPE, RCODE, RR, DNSBuffer, DNSHeader, DNSLabel, DNSQuestion, DNSRecord
from dnslib import A as A_RDATA

from lbdns import name as dname
from lbdns.balance.farm import NODATA, SERVFAIL, Farm
from lbdns.balance.policy.consistent_hash import client_subnet, ecs_subnet
from lbdns.dnsserver import ecs as rfc7871
from lbdns.dnsserver import explain
from lbdns.dnsserver.cookie import Cookies, MalformedCookie
from lbdns.dnsserver.resolve import REFUSED, Resolution, closest_encloser, resolve
from lbdns.dnsserver.rrl import RateLimiter, bucket_of, truncated
from lbdns.registry import Registry
from lbdns.zone.model import Zone

log = logging.getLogger("lbdns.dns")

EDNS_UDP_SIZE = 1232  # what we advertise and the most we send over UDP (DNS flag day 2020)
MAX_TCP_SIZE = 65535
CACHE_LIMIT = 50_000  # distinct questions remembered before the cache starts over
SYNTHESISED_LIMIT = 20_000  # negative and wildcard answers remembered before starting over
NEGATIVES_LIMIT = 4_096  # shared negative answers: (zone, name length, rcode); a few per zone
CHOICES_LIMIT = 4096  # distinct host choices remembered per farm name
WILDCARDS_LIMIT = 4096  # (wildcard, type) answers remembered

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD_CD = 0x0110  # the query bits a response copies
DO = 0x8000

_unpack_counts = struct.Struct("!HHHH").unpack_from
_unpack_rr = struct.Struct("!HHIH").unpack_from
_pack_u16 = struct.Struct("!H").pack

_OPT_TYPE = 41
_TSIG_TYPE = 250
_IXFR = 251
_TRANSFER_TYPES = (251, 252)  # IXFR, AXFR: refused, lbdns has no secondaries
_UNSUPPORTED_TYPES = (41, 253, 254)  # OPT as a question, MAILB, MAILA
_PLAIN_COUNTS_TC = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_EDNS_COUNTS_TC = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_TSIG_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_TSIG_COUNTS_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x02"
_BADKEY = 17
_NEGATIVE_COUNTS = b"\x00\x01\x00\x00\x00\x01\x00\x00"
_NEGATIVE_COUNTS_EDNS = b"\x00\x01\x00\x00\x00\x01\x00\x01"
_ECS_OPTION = 8  # EDNS Client Subnet (RFC 7871)


def _find_ecs(data: bytes, pos: int, end: int) -> tuple[int, int, bytes] | None:
    """The client subnet option among an OPT record's options, as (family, source prefix,
    address); None when there is none or it is malformed. The answer path parses the option
    strictly with ``lbdns.dnsserver.ecs`` (a malformed one is FORMERR) before using it."""
    while pos + 4 <= end:
        code, length = struct.unpack_from("!HH", data, pos)
        pos += 4
        if pos + length > end:
            return None
        if code == _ECS_OPTION and length >= 4:
            family, source = struct.unpack_from("!HB", data, pos)
            return family, source, bytes(data[pos + 4 : pos + length])
        pos += length
    return None


TCP_QTYPES = 65536  # where TCP questions start in ``Answerer.qtypes``


def rcode_name(rcode: int) -> str:
    """An rcode's mnemonic as /metrics and /v1/status show it (16 is BADVERS with EDNS)."""
    return "BADVERS" if rcode == 16 else RCODE.get(rcode, str(rcode))


def _opt(do: bool, ext_rcode: int = 0) -> bytes:
    return (
        b"\x00\x00\x29"
        + _pack_u16(EDNS_UDP_SIZE)
        + bytes((ext_rcode, 0))
        + _pack_u16(DO if do else 0)
        + b"\x00\x00"
    )


_OPT_PLAIN = _opt(False)
_OPT_DO = _opt(True)


def _read_name(data: bytes, pos: int) -> tuple[bytes, int]:
    """The name at ``pos`` in uncompressed wire form, and the offset just past it there.
    Raises ``FormErr`` for a name that runs off the end, loops or is too long."""
    size = len(data)
    out = bytearray()
    end = -1
    jumps = 0
    while True:
        if pos >= size:
            raise FormErr
        length = data[pos]
        if length >= 0xC0:
            if pos + 1 >= size or jumps > 64:
                raise FormErr
            target = (length & 0x3F) << 8 | data[pos + 1]
            if target >= pos:
                raise FormErr  # pointers point back (RFC 1035 4.1.4)
            if end < 0:
                end = pos + 2
            pos = target
            jumps += 1
            continue
        if length > 63:
            raise FormErr
        out += data[pos : pos + length + 1]
        if len(out) > 255 or pos + length + 1 > size:
            raise FormErr
        pos += length + 1
        if length == 0:
            return bytes(out), (pos if end < 0 else end)


def _limited(response: bytes, verdict: bool | None) -> bytes | None:
    """What is sent for a response over its rate limit: nothing, or its TC=1 form (a slip)."""
    return None if verdict is None else truncated(response)


def _append_option(response: bytes, option: bytes) -> bytes:
    """``response`` with ``option`` added to its OPT record, which every response to an EDNS
    query ends with (the TSIG BADKEY reply aside, which is returned as it is)."""
    if response[-11:-8] == b"\x00\x00\x29" and response[-2:] == b"\x00\x00":
        return response[:-2] + _pack_u16(len(option)) + option  # no options yet: the usual
    # An OPT that already carries an option (an echoed client subnet): the root owner and
    # type 41 whose RDATA runs exactly to the end.
    size = len(response)
    at = response.rfind(b"\x00\x00\x29", 12, size - 10)
    for _ in range(4):
        if at < 12:
            break
        rdlength = (response[at + 9] << 8) | response[at + 10]
        if at + 11 + rdlength == size:
            head = response[: at + 9] + _pack_u16(rdlength + len(option))
            return head + response[at + 11 :] + option
        at = response.rfind(b"\x00\x00\x29", 12, at)
    return response


class _Uncompressed(DNSBuffer):
    """A buffer that never compresses: packed RDATA that can be copied to any offset."""

    def encode_name(self, name) -> None:
        self.encode_name_nocompress(name)


def _pack_records(records: tuple[RR, ...], placeholder: tuple[bytes, ...]) -> bytes:
    """``records`` in wire form; an owner equal to ``placeholder`` becomes a pointer to the
    question name (offset 12), every other name is written out in full."""
    placeholder = tuple(label.lower() for label in placeholder)
    out = bytearray()
    for rr in records:
        labels = tuple(rr.rname.label)
        if tuple(label.lower() for label in labels) == placeholder:
            out += b"\xc0\x0c"
        else:
            out += b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
        buffer = _Uncompressed()
        rr.rdata.pack(buffer)
        out += struct.pack("!HHIH", rr.rtype, rr.rclass, rr.ttl, len(buffer.data)) + buffer.data
    return bytes(out)


def _opt_with(do: bool, option: bytes) -> bytes:
    """The OPT record of a response carrying ``option`` (an echoed client subnet)."""
    return _opt(do)[:-2] + _pack_u16(len(option)) + option


@dataclass(frozen=True, slots=True)
class Template:
    """A packed response minus ID, RD/CD bits, question and OPT record."""

    flags: int
    counts: bytes  # QD/AN/NS/AR counts without OPT
    counts_edns: bytes  # the same with AR + 1
    tail: bytes  # everything after the question
    lean: Template | None  # the same without the additional section, when that is droppable


@dataclass(slots=True)
class FarmEntry:
    """A question whose answer names hosts of a farm: one template per choice of hosts."""

    name_wire: bytes  # the lowercased question name
    qtype: int  # the question's type
    resolution: Resolution
    farm: Farm
    farm_qtype: int  # A or AAAA (ANY asks for A)
    by_choice: dict[tuple[str, ...] | str, Template]
    key: str | None = None  # a keyed farm: the key ("" for the client's subnet); None: not keyed


class FormErr(Exception):
    """The query is malformed; the response echoes what could be parsed."""


class Answerer:
    """Turns query bytes into response bytes from the registry's zones and farms."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.cache: dict[bytes, Template | FarmEntry] = {}
        # Answers for names that need not exist (negative and wildcard answers) apart, so that
        # a flood of random names cannot evict the answers of the real names.
        self.synthesised: dict[bytes, Template | FarmEntry] = {}
        # (wildcard owner, type) -> the answer shared by every name it covers (None: per name).
        self.wildcards: dict[tuple[str, int], Template | None] = {}
        # (zone origin, length of the asked name, rcode) -> the negative answer: it depends on
        # the name only through where the zone's name starts in the question, so a flood of
        # random names shares a few of these instead of making an object per name (fewer
        # objects for the garbage collector to walk: its pauses were the flood's worst latency).
        self.negatives: dict[tuple[bytes, int, int], Template] = {}
        self.cache_version = -1
        # Query bytes past the ID, seen before over UDP -> what answering them again needs:
        # (reply without ID, qtype, rcode) for a fixed answer, the parse for a farm question.
        # Resolvers repeat the same few questions byte for byte, so most queries skip the parse.
        self.seen: dict[bytes, tuple] = {}
        self.rcodes: Counter[int] = Counter()
        # Questions of class IN by type, UDP at [qtype] and TCP at [TCP_QTYPES + qtype]: a list
        # indexed by type costs a quarter of a Counter.
        self.qtypes: list[int] = [0] * (2 * TCP_QTYPES)
        self.dropped = 0
        self.errors = 0
        # Called with (query, client, tcp, response) when the query log is on; None costs one
        # attribute check per query when it is off.
        self.query_log: Callable[[bytes, str, bool, bytes | None], None] | None = None
        self.explain_queries = False  # answer CH TXT _lbdns.<farm> (config explain_queries)
        # Response rate limiting of UDP answers (config rrl); None when off.
        self.rrl: RateLimiter | None = None
        self.big = 1024  # the rate limiter's big_size (the server sets it with rrl)
        # DNS cookies (config cookies); None when off. While a query with a COOKIE option is
        # answered: the option for its response, whether its server cookie was good, and the
        # octets that option adds to the response (counted against the UDP size).
        self.cookies: Cookies | None = None
        self.cookie_reply: bytes | None = None
        self.cookie_valid = False
        self.opt_extra = 0
        # CH TXT id.server, version.bind... -> TXT RDATA (config identity; empty when off).
        self.identity: dict[bytes, bytes] = {}
        # The TCP idle timeout now, in seconds (set by the server; RFC 7828 keepalive).
        self.tcp_keepalive: Callable[[], float] | None = None
        self.worker: str | None = None  # "worker I of N pid P" when several processes serve

    # -- the per-query path -----------------------------------------------------------------

    def respond(self, data: bytes, client: str, tcp: bool = False) -> bytes | None:
        """The response to one query, or None to send nothing. Never raises."""
        try:
            hit = None if tcp else self.seen.get(data[2:])
            if hit is not None and self.cache_version == self.registry.version:
                # A repeated UDP query (never None, never TCP). Each branch charges the rate
                # limiter itself, with the response class kept beside the reply.
                self.qtypes[hit[1]] += 1
                if hit[0].__class__ is bytes:
                    self.rcodes[hit[2]] += 1
                    response = data[:2] + hit[0]
                    if self.rrl is not None:
                        verdict = self.rrl.charge(hit[3], client)
                        if verdict is not True:
                            response = _limited(response, verdict)
                else:
                    # A farm question: the choice is made per query, the reply for each choice
                    # is assembled once.
                    entry = hit[0]
                    if entry.key is None:
                        # The herd is the client subnet's when the answer is scoped to one;
                        # a big herd's TTL is shortened: (hosts, TTL) is the choice (a few
                        # templates per choice of hosts at most).
                        choice = entry.farm.query_answer(entry.farm_qtype, hit[4] or client)
                    else:
                        choice = entry.farm.key_answer(
                            entry.farm_qtype, entry.key or hit[4] or client_subnet(client), client
                        )
                    reply = hit[3].get(choice)
                    if reply is None:
                        reply = self._farm_reply(hit, data, choice)  # counts its rcode
                    else:
                        self.rcodes[reply[1]] += 1
                    response = data[:2] + reply[0]
                    if self.rrl is not None:
                        verdict = self.rrl.charge(reply[2], client)
                        if verdict is not True:
                            response = _limited(response, verdict)
            else:
                response = self._respond(data, client, tcp)
                if self.cookie_reply is not None:
                    response = self._with_cookie(response, client, tcp)  # and its RRL
                    if self.query_log is not None:
                        self.query_log(data, client, tcp, response)
                    return response
                if self.rrl is not None and not tcp and response is not None:
                    verdict = self.rrl.charge(bucket_of(response, self.big), client)
                    if verdict is not True:
                        response = _limited(response, verdict)
            if self.query_log is not None:
                self.query_log(data, client, tcp, response)
            return response
        except Exception:  # a bug must cost one query, not the server
            self.cookie_reply = None
            self.opt_extra = 0
            self.errors += 1
            if self.errors & (self.errors - 1) == 0:  # log the 1st, 2nd, 4th, 8th... only
                log.exception("internal error answering a query from %s", client)
            return self._header_only(data, RCODE.SERVFAIL) if len(data) >= 12 else None

    def udp_cache(self) -> tuple | None:
        """What the compiled UDP loop (``lbdns.dnsserver._udpfast``) needs to answer repeated
        queries itself, as the first branch of ``respond`` does: (seen, qtypes, rcodes,
        farm_reply, the rate limiter's state, limited); None while every query must come
        through ``respond`` (the query log is on, or the zones changed since ``seen`` was
        filled)."""
        if self.query_log is not None or self.cache_version != self.registry.version:
            return None
        rrl = None if self.rrl is None else self.rrl.compiled
        return (self.seen, self.qtypes, self.rcodes, self._farm_reply, rrl, _limited)

    def _respond(self, data: bytes, client: str, tcp: bool) -> bytes | None:
        size = len(data)
        if size < 12:
            self.dropped += 1
            return None
        qflags = (data[2] << 8) | data[3]
        if qflags & QR:
            self.dropped += 1  # a response sent to us: answering could start a loop
            return None
        qdcount, ancount, nscount, arcount = _unpack_counts(data, 4)
        opcode = (qflags >> 11) & 0xF
        if qdcount != 1:
            # An opcode we do not implement may have any sections (UPDATE, RFC 2136): NOTIMP.
            return self._header_only(data, RCODE.NOTIMP if opcode else RCODE.FORMERR)
        # The question name: plain labels only, no compression.
        pos = 12
        while True:
            if pos >= size:
                return self._header_only(data, RCODE.FORMERR)
            length = data[pos]
            if length == 0:
                break
            if length > 63:
                return self._header_only(data, RCODE.FORMERR)
            pos += length + 1
        qend = pos + 5  # past the root label, type and class
        if qend > size or qend - 12 > 259:
            return self._header_only(data, RCODE.FORMERR)
        question = data[12:qend]
        qtype = (data[qend - 4] << 8) | data[qend - 3]
        edns = -1  # no OPT
        do = False
        subnet: rfc7871.ClientSubnet | None = None  # the query's client subnet option
        if arcount or ancount or nscount:
            # An IXFR query carries the client's SOA in the authority section (RFC 1995 3):
            # refused, as every transfer is, rather than malformed.
            ixfr = qtype == _IXFR and not ancount and not opcode
            if ancount or (nscount and not ixfr):
                rcode = RCODE.NOTIMP if opcode else RCODE.FORMERR
                return self._error(data, qflags, question, rcode, -1, False)
            try:
                edns, do, version, tsig, ecs, cookie, keepalive = self._find_opt(
                    data, qend, nscount, arcount
                )
            except FormErr:
                return self._error(data, qflags, question, RCODE.FORMERR, -1, False)
            if edns >= 0 and not nscount:  # nscount: an IXFR, refused below
                try:  # every RFC 7871 rule: a malformed client subnet option is FORMERR
                    subnet = rfc7871.client_subnet(data, qend, arcount)
                except rfc7871.EcsError:
                    return self._error(data, qflags, question, RCODE.FORMERR, edns, do)
            if cookie is not None and self.cookies is not None:
                try:
                    self.cookie_valid, self.cookie_reply = self.cookies.check(
                        data, cookie[0], cookie[1], client
                    )
                except MalformedCookie:
                    return self._error(data, qflags, question, RCODE.FORMERR, -1, False)
                self.opt_extra = len(self.cookie_reply)
            if keepalive and tcp and self.tcp_keepalive is not None:
                # RFC 7828: over TCP, tell a client that asked how long it may stay idle (in
                # units of 100 ms), shorter when the server is busy.
                timeout = min(0xFFFF, int(self.tcp_keepalive() * 10))
                option = b"\x00\x0b\x00\x02" + _pack_u16(timeout)
                self.cookie_reply = (self.cookie_reply or b"") + option
                self.opt_extra += 6
            if tsig:
                # We hold no keys: every signed request is answered NOTAUTH/BADKEY, unsigned
                # (RFC 8945 5.2, 5.3.2), before anything else is looked at.
                try:
                    return self._badkey(data, qflags, question, edns, do, tsig)
                except FormErr:
                    return self._error(data, qflags, question, RCODE.FORMERR, -1, False)
            if version:
                # BADVERS = 16: upper bits 1 in the OPT record, lower bits 0 in the header.
                return self._error(data, qflags, question, 0, edns, do, ext_rcode=1)
            if ixfr:
                return self._error(data, qflags, question, RCODE.REFUSED, edns, do)
        if opcode:
            return self._error(data, qflags, question, RCODE.NOTIMP, edns, do)
        if data[qend - 2] != 0 or data[qend - 1] != CLASS.IN:
            if self.identity and data[qend - 2 : qend] == b"\x00\x03" and qtype in (16, 255):
                rdata = self.identity.get(data[12 : qend - 4].lower())
                if rdata is not None:
                    return self._identity(data, qflags, question, rdata, edns, do)
            if self.explain_queries and data[qend - 2 : qend] == b"\x00\x03" and qtype == 16:
                return explain.respond(self.registry, data, tcp, self.worker)  # off by default
            return self._error(data, qflags, question, RCODE.REFUSED, edns, do)
        self.qtypes[TCP_QTYPES + qtype if tcp else qtype] += 1

        if self.cache_version != self.registry.version:
            self.cache.clear()
            self.synthesised.clear()
            self.wildcards.clear()
            self.negatives.clear()
            self.seen.clear()
            self.cache_version = self.registry.version
        key = data[12 : qend - 2].lower()  # the question's name and type
        if qtype >= 0x41:
            # lower() would also fold a type octet in 0x41-0x5A (HTTPS, 65): keep the type exact.
            key = key[:-2] + data[qend - 4 : qend - 2]
        entry = self.cache.get(key)
        if entry is None:
            entry = self.synthesised.get(key) or self._entry(key, qtype)
            if entry is None:  # not in our zones: nothing is remembered for it
                return self._error(data, qflags, question, RCODE.REFUSED, edns, do)
        if entry.__class__ is Template:
            # Not client-dependent: an ECS option is echoed with scope 0 (RFC 7871 7.2.1).
            opt = _opt_with(do, subnet.option(0)) if subnet is not None else None
            response = self._assemble(data, entry, qflags, question, qend, edns, do, tcp, opt)
            seen: tuple = (response[2:], qtype, response[3] & 0xF, bucket_of(response, self.big))
        else:
            key, opt = "", None
            if entry.key == "" and subnet is not None:
                key, opt = self._client_subnet(subnet, do)
            elif subnet is not None:
                scope = 0
                if entry.key is None:  # a farm's answer is for the subnet's herd
                    spec = entry.farm.spec
                    scope = subnet.scope(spec.ecs_scope_v4, spec.ecs_scope_v6)
                    if scope:
                        key = subnet.key(scope)
                opt = _opt_with(do, subnet.option(scope))
            if entry.key is None:
                choice = entry.farm.query_answer(entry.farm_qtype, key or client)  # (hosts, TTL)
            else:
                choice = entry.farm.key_answer(
                    entry.farm_qtype, entry.key or key or client_subnet(client), client
                )
            template = self._choice_template(entry, choice)
            response = self._assemble(data, template, qflags, question, qend, edns, do, tcp, opt)
            # How the compiled UDP loop answers it again (see udp_cache): the farm's own call,
            # and the key: none (least-load), the label, or the function that makes the
            # client-subnet key of the client's address (a query with ECS has it in ``key``).
            if entry.key is None:
                choose, label = entry.farm.query_answer, None
            else:
                choose, label = entry.farm.key_answer, entry.key or client_subnet
            parse = (qflags, question, qend, edns, do)
            seen = (entry, qtype, parse, {}, key, opt, choose, entry.farm_qtype, label)
        if not tcp and self.cookie_reply is None:  # a cookie's reply is made per query
            if len(self.seen) >= CACHE_LIMIT:
                self.seen.clear()
            self.seen[data[2:]] = seen
        return response

    def _assemble(
        self,
        data: bytes,
        template: Template,
        qflags: int,
        question: bytes,
        qend: int,
        edns: int,
        do: bool,
        tcp: bool,
        opt: bytes | None = None,
    ) -> bytes:
        """The response to ``data`` from ``template``: its ID, RD/CD, question and OPT (``opt``
        when the OPT record carries an option, such as an echoed client subnet)."""
        limit = MAX_TCP_SIZE if tcp else (512 if edns < 0 else min(edns, EDNS_UDP_SIZE))
        if opt is None:
            opt = _OPT_DO if do else _OPT_PLAIN
        extra = 0 if edns < 0 else len(opt) + self.opt_extra
        length = qend + len(template.tail) + extra
        if length > limit and template.lean is not None:
            template = template.lean
            length = qend + len(template.tail) + extra
        flags = template.flags | (qflags & RD_CD)
        self.rcodes[flags & 0xF] += 1
        if length > limit:
            flags |= TC
            if edns < 0:
                return data[:2] + _pack_u16(flags) + _PLAIN_COUNTS_TC + question
            return (
                data[:2]
                + _pack_u16(flags)
                + _EDNS_COUNTS_TC
                + question
                + (_OPT_DO if do else _OPT_PLAIN)
            )
        if edns < 0:
            return data[:2] + _pack_u16(flags) + template.counts + question + template.tail
        return data[:2] + _pack_u16(flags) + template.counts_edns + question + template.tail + opt

    def _farm_reply(self, hit: tuple, data: bytes, choice: tuple | str) -> tuple:
        """(reply without ID, rcode) to a seen farm question for one choice of hosts."""
        entry, parsed, replies, opt = hit[0], hit[2], hit[3], hit[5]
        response = self._assemble(data, self._choice_template(entry, choice), *parsed, False, opt)
        if len(replies) >= CHOICES_LIMIT:
            replies.clear()
        reply = replies[choice] = (response[2:], response[3] & 0xF, bucket_of(response, self.big))
        return reply

    @staticmethod
    def _client_subnet(subnet: rfc7871.ClientSubnet, do: bool) -> tuple[str, bytes | None]:
        """A client-subnet keyed farm: the key of a query's client subnet option and the OPT
        record that echoes it with the scope the answer holds for (RFC 7871 7.2.1); ("", OPT
        with scope 0) when it names no subnet (source 0)."""
        found = ecs_subnet(subnet.family, subnet.source, subnet.address)
        if found is None:
            return "", _opt_with(do, subnet.option(0))
        key, scope = found
        return key, _opt_with(do, subnet.option(scope))

    def _choice_template(self, entry: FarmEntry, choice: tuple | str) -> Template:
        """The template for a choice of hosts: a tuple of names or NODATA/SERVFAIL/SORRY (a
        keyed answer), or (that, TTL) (``Farm.answer``; a few TTLs per choice at most)."""
        template = entry.by_choice.get(choice)
        if template is None:
            if len(entry.by_choice) >= CHOICES_LIMIT:
                entry.by_choice.clear()
            template = entry.by_choice[choice] = self._farm_pack(entry, choice)
        return template

    @staticmethod
    def _find_opt(
        data: bytes, pos: int, authority: int, additional: int
    ) -> tuple[
        int,
        bool,
        int,
        tuple[int, int, int] | None,
        tuple[int, int, bytes] | None,
        tuple[int, int] | None,
        bool,
    ]:
        """Walk the authority and additional sections; return (udp size, DO, version) of the
        OPT (-1 when there is none), for a TSIG record (owner, rdata start, rdata end), the
        OPT's client subnet as (family, source prefix, address) or None, for the first COOKIE
        option (its data's offset, its length), and whether an edns-tcp-keepalive option
        came."""
        size = len(data)
        found_opt = keepalive = False
        udp, do, version = -1, False, 0
        tsig = ecs = cookie = None
        count = authority + additional
        for index in range(count):
            owner = pos
            while True:  # skip the owner name, which may be compressed
                if pos >= size:
                    raise FormErr
                length = data[pos]
                if length == 0:
                    pos += 1
                    break
                if length >= 0xC0:
                    # Never followed, but a pointer must point back before this name: one that
                    # points here or further on is a loop or garbage (RFC 1035 4.1.4).
                    if pos + 1 >= size or ((length & 0x3F) << 8 | data[pos + 1]) >= owner:
                        raise FormErr
                    pos += 2
                    break
                if length > 63:
                    raise FormErr
                pos += length + 1
            if pos + 10 > size:
                raise FormErr
            rtype, rclass, ttl, rdlength = _unpack_rr(data, pos)
            rdata = pos + 10
            pos = rdata + rdlength
            if pos > size:
                raise FormErr
            if rtype == _OPT_TYPE:
                if found_opt or data[owner] != 0 or index < authority:
                    raise FormErr  # RFC 6891 6.1.1: one OPT, owned by the root
                found_opt = True
                # Payload sizes below 512 mean 512 (RFC 6891 6.2.5).
                udp, do, version = max(rclass, 512), bool(ttl & DO), (ttl >> 16) & 0xFF
                ecs = _find_ecs(data, pos - rdlength, pos) if rdlength else None
                while rdata < pos:  # the options must fill the RDATA exactly
                    if rdata + 4 > pos:
                        raise FormErr
                    length = (data[rdata + 2] << 8) | data[rdata + 3]
                    if data[rdata] == 0 and data[rdata + 1] == 10 and cookie is None:
                        cookie = (rdata + 4, length)  # RFC 7873 5.2: the first one counts
                    elif data[rdata] == 0 and data[rdata + 1] == 11:
                        keepalive = True
                    rdata += 4 + length
                    if rdata > pos:
                        raise FormErr
            elif rtype == _TSIG_TYPE:
                # RFC 8945 5.1: a TSIG must be the last record, of class ANY.
                if index != count - 1 or index < authority or rclass != 255:
                    raise FormErr
                tsig = (owner, rdata, pos)
        return udp, do, version, tsig, ecs, cookie, keepalive

    # -- building templates (the slow path, once per question and zone version) -------------

    def _entry(self, key: bytes, qtype: int) -> Template | FarmEntry | None:
        """The answer to a new question, remembered; None when it is REFUSED (a name outside
        our zones, a zone transfer), which is answered without remembering anything."""
        name_wire = key[:-2]
        if qtype in _TRANSFER_TYPES:
            return None  # REFUSED: lbdns has no secondaries
        if qtype in _UNSUPPORTED_TYPES:
            notimp = self._pack(name_wire, qtype, Resolution(RCODE.NOTIMP, False))
            return self._synthesised(key, notimp)  # any name: not among the real answers
        qname = dname.from_wire(name_wire)
        zone = self.registry.zone_of(qname)
        if zone is None:
            return None  # REFUSED: not ours
        encloser = None if qname in zone.names else closest_encloser(zone, qname)
        if encloser is not None and encloser not in zone.farms:
            # A name that does not exist, and not below a farm (whose host and key names
            # resolve): NXDOMAIN, or a wildcard's answer. Floods of random names land here, so
            # neither resolves nor packs per name (docs/dns.md).
            source = f"*.{encloser}"
            if source not in zone.rrsets:
                return self._synthesised(
                    key, self._shared_negative(name_wire, zone, RCODE.NXDOMAIN)
                )
            template = self.wildcards.get((source, qtype))
            if template is None:
                template = self._wildcard_template(source, qtype)
            if template.__class__ is Template:
                return self._synthesised(key, template)
            # A wildcard NODATA (the SOA's owner points into the question) or one that leads
            # to a farm: per name, as any other name.
        resolution = resolve(self.registry, qname, qtype)
        if resolution is REFUSED:
            return None
        if (
            not resolution.answer
            and resolution.authority
            and resolution.authority[0] is resolution.zone.negative_soa
        ):
            negative = self._shared_negative(name_wire, resolution.zone, resolution.rcode)
            return self._synthesised(key, negative)
        if resolution.farm is not None:
            farm_qtype = QTYPE.AAAA if qtype == QTYPE.AAAA else QTYPE.A
            entry: Template | FarmEntry = FarmEntry(
                name_wire, qtype, resolution, resolution.farm, farm_qtype, {}, resolution.key
            )
        else:
            entry = self._pack(name_wire, qtype, resolution)
        if qname not in zone.names:  # made from a wildcard
            return self._synthesised(key, entry)
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()  # a flood of random names must not grow memory without bound
        self.cache[key] = entry
        return entry

    def _farm_pack(self, entry: FarmEntry, choice: tuple | str) -> Template:
        key, qtype = entry.name_wire, entry.qtype
        res = entry.resolution
        farm = entry.farm
        ttl = farm.spec.ttl
        if choice.__class__ is tuple and len(choice) == 2 and choice[1].__class__ is int:
            choice, ttl = choice  # (names, shortened TTL)
        if choice == SERVFAIL:
            return self._pack(key, qtype, Resolution(RCODE.SERVFAIL, aa=False))
        if choice == NODATA:
            soa = res.zone.negative_soa
            return self._pack(key, qtype, Resolution(RCODE.NOERROR, True, res.answer, (soa,)))
        rdata = A_RDATA if entry.farm_qtype == QTYPE.A else AAAA_RDATA
        records = [
            RR(res.farm_owner, entry.farm_qtype, ttl=ttl, rdata=rdata(address))
            for address in farm.addresses(choice, entry.farm_qtype)
        ]
        return self._pack(key, qtype, Resolution(RCODE.NOERROR, True, (*res.answer, *records)))

    def _synthesised(self, key: bytes, entry: Template | FarmEntry) -> Template | FarmEntry:
        if len(self.synthesised) >= SYNTHESISED_LIMIT:
            self.synthesised.clear()
        self.synthesised[key] = entry
        return entry

    def _wildcard_template(self, source: str, qtype: int) -> Template | None:
        """The answer for every name that the wildcard ``source`` covers, or None when it is
        made per name. Remembered per (wildcard, type)."""
        res = resolve(self.registry, source, qtype)
        template = None
        negative = not res.answer and res.authority and res.authority[0] is res.zone.negative_soa
        if res.farm is None and not res.additional and not negative:
            # Records owned by the wildcard are owned by the asked name: a pointer to the
            # question at offset 12. Nothing else is compressed, so the bytes after the
            # question are the same whatever its length.
            owner = dname.text_labels(source)
            tail = _pack_records(res.answer, owner) + _pack_records(res.authority, owner)
            template = Template(
                flags=QR | (AA if res.aa else 0) | res.rcode,
                counts=struct.pack("!HHHH", 1, len(res.answer), len(res.authority), 0),
                counts_edns=struct.pack("!HHHH", 1, len(res.answer), len(res.authority), 1),
                tail=tail,
                lean=None,
            )
        if len(self.wildcards) >= WILDCARDS_LIMIT:
            self.wildcards.clear()
        self.wildcards[(source, qtype)] = template
        return template

    def _shared_negative(self, name_wire: bytes, zone: Zone, rcode: int) -> Template:
        key = (zone.origin_wire, len(name_wire), rcode)
        negative = self.negatives.get(key)
        if negative is None:
            if len(self.negatives) >= NEGATIVES_LIMIT:
                self.negatives.clear()
            negative = self.negatives[key] = self._negative(name_wire, zone, rcode)
        return negative

    @staticmethod
    def _negative(name_wire: bytes, zone: Zone, rcode: int) -> Template:
        """NXDOMAIN or NODATA with the zone's SOA, built by hand: floods of random names make
        many of these, and dnslib would take ten times as long."""
        owner = 12 + len(name_wire) - len(zone.origin_wire)  # the zone's name in the question
        return Template(
            flags=QR | AA | rcode,
            counts=_NEGATIVE_COUNTS,
            counts_edns=_NEGATIVE_COUNTS_EDNS,
            tail=_pack_u16(0xC000 | owner) + zone.negative_soa_wire,
            lean=None,
        )

    @staticmethod
    def _pack(name_wire: bytes, qtype: int, res: Resolution) -> Template:
        # The exact labels: dnslib would IDNA-encode or split a text name with odd octets,
        # and the template's offsets rely on the question packing to its own length.
        qname = DNSLabel(dname.labels(name_wire))
        # qtype may be one dnslib has no name for; DNSQuestion takes the number as is.
        record = DNSRecord(
            DNSHeader(id=0, qr=1, aa=int(res.aa), ra=0, rcode=res.rcode),
            q=DNSQuestion(qname, qtype, CLASS.IN),
        )
        for rr in res.answer:
            record.add_answer(rr)
        for rr in res.authority:
            record.add_auth(rr)
        lean = None
        if res.additional:
            lean = Answerer._pack(
                name_wire, qtype, Resolution(res.rcode, res.aa, res.answer, res.authority)
            )
            for rr in res.additional:
                record.add_ar(rr)
        packed = record.pack()
        qend = 12 + len(name_wire) + 4
        # dnslib's header sets RD by default; the query's own RD and CD bits go in per query.
        flags = ((packed[2] << 8) | packed[3]) & ~RD_CD
        counts = packed[4:12]
        arcount = (counts[6] << 8) | counts[7]
        return Template(
            flags=flags,
            counts=counts,
            counts_edns=counts[:6] + _pack_u16(arcount + 1),
            tail=packed[qend:],
            lean=lean,
        )

    # -- cookies ----------------------------------------------------------------------------

    def _with_cookie(self, response: bytes | None, client: str, tcp: bool) -> bytes | None:
        """``response`` with the COOKIE (and over TCP the keepalive) option in its OPT, after
        rate limiting: a good server cookie bypasses it; where it would slip, BADCOOKIE with a
        fresh cookie instead."""
        option, valid = self.cookie_reply, self.cookie_valid
        self.cookie_reply = None
        self.opt_extra = 0
        if response is None:
            return None
        if self.rrl is not None and not tcp and not valid:
            verdict = self.rrl.allow(response, client)
            if verdict is None:
                return None
            if verdict is False:
                self.cookies.results["badcookie"] += 1
                cut = truncated(response)
                if cut[-11:-8] != b"\x00\x00\x29":
                    return cut
                # BADCOOKIE = 23: 1 in the OPT's extended rcode, 7 in the header; no TC.
                head = cut[:2] + bytes((cut[2] & 0xF9, (cut[3] & 0xF0) | 7))
                response = head + cut[4:-6] + b"\x01" + cut[-5:]
        return _append_option(response, option)

    def _identity(
        self, data: bytes, qflags: int, question: bytes, rdata: bytes, edns: int, do: bool
    ) -> bytes:
        """The CH TXT answer naming this server or its version (config identity)."""
        self.rcodes[RCODE.NOERROR] += 1
        flags = QR | AA | (qflags & RD_CD)
        record = b"\xc0\x0c" + struct.pack("!HHIH", QTYPE.TXT, CLASS.CH, 0, len(rdata)) + rdata
        if edns < 0:
            return (
                data[:2]
                + _pack_u16(flags)
                + b"\x00\x01\x00\x01\x00\x00\x00\x00"
                + question
                + record
            )
        counts = b"\x00\x01\x00\x01\x00\x00\x00\x01"
        return (
            data[:2]
            + _pack_u16(flags)
            + counts
            + question
            + record
            + (_OPT_DO if do else _OPT_PLAIN)
        )

    # -- error responses --------------------------------------------------------------------

    def _badkey(
        self,
        data: bytes,
        qflags: int,
        question: bytes,
        edns: int,
        do: bool,
        tsig: tuple[int, int, int],
    ) -> bytes:
        """NOTAUTH with an unsigned TSIG whose error is BADKEY (RFC 8945 5.2, 5.3.2)."""
        owner, rdata, end = tsig
        key, _ = _read_name(data, owner)
        algorithm, pos = _read_name(data, rdata)
        # Time signed (6), fudge (2), MAC size (2), MAC, original ID (2), error (2), other (2+).
        if pos + 10 > end:
            raise FormErr
        mac_size = (data[pos + 8] << 8) | data[pos + 9]
        rest = pos + 10 + mac_size
        if rest + 6 > end or rest + 6 + ((data[rest + 4] << 8) | data[rest + 5]) != end:
            raise FormErr
        rdata_out = algorithm + data[pos : pos + 8] + b"\x00\x00" + data[rest : rest + 2]
        rdata_out += _pack_u16(_BADKEY) + b"\x00\x00"
        record = key + struct.pack("!HHIH", _TSIG_TYPE, 255, 0, len(rdata_out)) + rdata_out
        self.rcodes[RCODE.NOTAUTH] += 1
        flags = QR | (qflags & (0x7800 | RD_CD)) | RCODE.NOTAUTH
        if edns < 0:
            return data[:2] + _pack_u16(flags) + _TSIG_COUNTS + question + record
        return data[:2] + _pack_u16(flags) + _TSIG_COUNTS_EDNS + question + _opt(do) + record

    def _header_only(self, data: bytes, rcode: int) -> bytes:
        self.rcodes[rcode] += 1
        flags = QR | (((data[2] << 8) | data[3]) & (0x7800 | RD_CD)) | rcode
        return data[:2] + _pack_u16(flags) + b"\x00" * 8

    def _error(
        self,
        data: bytes,
        qflags: int,
        question: bytes,
        rcode: int,
        edns: int,
        do: bool,
        ext_rcode: int = 0,
    ) -> bytes:
        self.rcodes[(ext_rcode << 4) | rcode] += 1
        flags = QR | (qflags & (0x7800 | RD_CD)) | rcode  # opcode echoed, AA clear
        if edns < 0:
            return data[:2] + _pack_u16(flags) + _PLAIN_COUNTS_TC + question
        return data[:2] + _pack_u16(flags) + _EDNS_COUNTS_TC + question + _opt(do, ext_rcode)
