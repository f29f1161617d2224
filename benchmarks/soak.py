"""Memory over a long run: lbdns's RSS under mixed traffic, printed as it goes.

    .venv/bin/python benchmarks/soak.py [--duration S] [--rate Q/S] [--every S] [--json FILE]

One ``lbdns serve`` on the example zones, with rate limiting (no whitelist, a rate high enough
not to limit) and cookies on, so that their tables fill too. For ``--duration`` seconds
(default 60; the issue's soak is 1800) a sender process offers ``--rate`` UDP queries a second
(default 3000), each from one of 256 sockets bound to random 127.x.y.z addresses that are
replaced as it goes (new clients, new networks), in this mix:

* 40 % valid: farm names (A, AAAA), static names, MX, with and without EDNS;
* 25 % random names, half under the wildcard ``*.apps``, half NXDOMAIN;
* 15 % with a random DNS client cookie (and every other one returning a server cookie);
* 20 % fuzzed: a valid query with random octets flipped, cut or appended.

Meanwhile the main process posts host reports over HTTP (10 a second) and opens a TCP query
now and then. Every ``--every`` seconds it prints lbdns's RSS (VmRSS from /proc), and at the end
the first, peak and last figures and the growth over the second half of the run, which is what
a bounded process keeps near zero. Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

from flood import wire_query

from lbdns.testing.process import EXAMPLE_ZONES, LbdnsProcess, http_request, load_note

VALID = (
    ("chat.example.test.", 1),
    ("chat.example.test.", 28),
    ("mail.example.test.", 1),
    ("www.example.test.", 1),
    ("example.test.", 15),
    ("_sip._tcp.example.test.", 33),
)
LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def random_source(rng: random.Random) -> str:
    return f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def cookie_query(rng: random.Random, qid: int) -> bytes:
    name, qtype = rng.choice(VALID)
    cookie = rng.randbytes(8)
    if rng.random() < 0.5:
        cookie += b"\x01\x00\x00\x00" + struct.pack("!I", int(time.time())) + rng.randbytes(8)
    option = struct.pack("!HH", 10, len(cookie)) + cookie
    query = wire_query(name, qid, qtype)
    query = query[:10] + b"\x00\x01" + query[12:]
    return query + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00" + struct.pack("!H", len(option)) + option


def fuzzed(rng: random.Random, qid: int) -> bytes:
    packet = bytearray(wire_query(*rng.choice(VALID), qid, edns=rng.random() < 0.5))
    how = rng.random()
    if how < 0.5:
        for _ in range(rng.randrange(1, 4)):
            packet[rng.randrange(2, len(packet))] = rng.randrange(256)
    elif how < 0.75:
        del packet[rng.randrange(12, len(packet)) :]
    else:
        packet += rng.randbytes(rng.randrange(1, 64))
    packet[2] &= 0x7F  # a query, so that it is not simply dropped
    return bytes(packet)


def one_query(rng: random.Random, qid: int) -> bytes:
    pick = rng.random()
    if pick < 0.40:
        name, qtype = rng.choice(VALID)
        return wire_query(name, qid, qtype, edns=rng.random() < 0.5)
    if pick < 0.65:
        label = "".join(rng.choices(LETTERS, k=10))
        suffix = ".apps.example.test." if rng.random() < 0.5 else ".example.test."
        return wire_query(label + suffix, qid)
    if pick < 0.80:
        return cookie_query(rng, qid)
    return fuzzed(rng, qid)


def sender(address, rate: int, duration: float, seed: int, out) -> None:
    rng = random.Random(seed)
    sockets = []
    for _ in range(256):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((random_source(rng), 0))
        sock.setblocking(False)
        sockets.append(sock)
    sent = replies = 0
    started = time.monotonic()
    end = started + duration
    while time.monotonic() < end:
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            i = rng.randrange(len(sockets))
            try:
                sockets[i].sendto(one_query(rng, sent & 0xFFFF), address)
            except OSError:
                pass
            sent += 1
            if sent % 50 == 0:  # a new client in place of an old one
                sockets[i].close()
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((random_source(rng), 0))
                sock.setblocking(False)
                sockets[i] = sock
        for sock in sockets:
            while True:
                try:
                    sock.recv(65535)
                    replies += 1
                except OSError:
                    break
        time.sleep(0.002)
    for sock in sockets:
        sock.close()
    out.put({"sent": sent, "replies": replies})


def tcp_query(address) -> None:
    try:
        with socket.create_connection(address, timeout=2) as sock:
            packet = wire_query("mail.example.test.", 7)
            sock.sendall(struct.pack("!H", len(packet)) + packet)
            sock.recv(4096)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (the issue: 1800)")
    parser.add_argument("--rate", type=int, default=3000, help="UDP queries per second")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between RSS lines")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    samples: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(prefix="lbdns-soak-") as work:
        config = Path(work) / "lbdns.yaml"
        config.write_text(
            "rrl: {enabled: true, rate: 100000}\ncookies: {secret: " + os.urandom(16).hex() + "}\n"
        )
        with LbdnsProcess(Path(work), zones=EXAMPLE_ZONES, config=config) as server:
            pid = server.proc.pid
            context = multiprocessing.get_context("fork")
            out = context.Queue()
            flood = context.Process(
                target=sender, args=(server.dns[0], args.rate, args.duration, 20, out)
            )
            started = time.monotonic()
            samples.append((0.0, rss_kib(pid)))
            print(f"{'t (s)':>7} {'RSS (MiB)':>10}   ({load_note()})")
            print(f"{0:>7.0f} {samples[0][1] / 1024:>10.1f}")
            flood.start()
            seq = 0
            next_sample = args.every
            rng = random.Random(7)
            while time.monotonic() - started < args.duration:
                seq += 1
                body = {
                    "farm": "chat.example.test.",
                    "host": rng.choice(("web1", "web2", "web3")),
                    "seq": seq,
                    "interval": 1.0,
                    "metrics": {"connections": rng.randrange(1000)},
                }
                http_request(server.http_url + "/v1/report", body=body, timeout=5)
                if seq % 10 == 0:
                    tcp_query(server.dns[0])
                elapsed = time.monotonic() - started
                if elapsed >= next_sample:
                    samples.append((elapsed, rss_kib(pid)))
                    print(f"{elapsed:>7.0f} {samples[-1][1] / 1024:>10.1f}", flush=True)
                    next_sample += args.every
                time.sleep(0.1)
            result = out.get(timeout=30)
            flood.join(10)
            samples.append((time.monotonic() - started, rss_kib(pid)))
            alive = server.proc.poll() is None
    half = [kib for t, kib in samples if t >= args.duration / 2]
    first, peak, last = samples[0][1], max(k for _, k in samples), samples[-1][1]
    growth = (half[-1] - half[0]) / 1024 if len(half) >= 2 else 0.0
    print(
        f"sent {result['sent']} queries ({result['replies']} replies), {seq} reports;"
        f" server alive: {alive}"
    )
    print(
        f"RSS first {first / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, last {last / 1024:.1f}"
        f" MiB; growth over the second half {growth:+.1f} MiB"
    )
    if args.json:
        args.json.write_text(json.dumps({"samples": samples, **result}, indent=2))
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
