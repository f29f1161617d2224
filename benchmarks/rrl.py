"""Response rate limiting under a reflection flood: the amplification a flooding network gets,
and what a client in another network sees meanwhile.

    .venv/bin/python benchmarks/rrl.py [--rate Q/S] [--duration S] [--json FILE]

One ``lbdns serve`` on the example zones plus ``big.example.test``, a TXT RRset that packs to
about 1.1 KB, the largest answer that fits a UDP reply (1232 octets; ANY is answered with one
RRset). a sender process sends ``--rate`` queries a second (default 50,000) for that TXT, with
EDNS, from 127.0.0.1, reading every reply, for ``--duration`` seconds, once with RRL off and once with it on (the
defaults: 100 responses a second per /24 and class, slip 2, no whitelist); meanwhile a probe
bound to 127.0.1.1 asks a farm name and a static name in turn every 20 ms (below the limit);
a TC=1 reply counts as unanswered.

Amplification = octets the server sent to the flooding network / octets it received from it,
as the sender counts them. Targets (issue 20): <= 1.0 with RRL on, and the
probe answered 100 % with p99 <= 5 ms. Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from flood import Probe, cpu_seconds, python_flood, wire_query

from lbdns.testing.process import EXAMPLE_ZONES, LbdnsProcess, load_note

BIG_TXT = [f"record-{i:02d}-" + "x" * 240 for i in range(4)]  # 4 x 251 octets of text


def zone_folder(work: Path) -> Path:
    folder = work / "zones"
    folder.mkdir()
    text = (EXAMPLE_ZONES / "example.test.yaml").read_text()
    strings = "\n".join(f"      - {s}" for s in BIG_TXT)
    text = text.replace("records:\n", f"records:\n  big:\n    TXT:\n{strings}\n", 1)
    (folder / "example.test.yaml").write_text(text)
    return folder


def run(work: Path, rrl: bool, rate: int, duration: float) -> dict:
    config = work / f"lbdns-{'on' if rrl else 'off'}.yaml"
    config.write_text(f"rrl:\n  enabled: {'true' if rrl else 'false'}\n")
    with LbdnsProcess(work, zones=zone_folder_cached(work), config=config, http=None) as server:
        address = server.dns[0]
        # 50 queries a second: below the rate limit, as a real client of the zone would be.
        probe = Probe(address, source="127.0.1.1", interval=0.02)
        probe.start()
        time.sleep(0.2)
        before = cpu_seconds(server.proc.pid)
        packet = wire_query("big.example.test.", 0, qtype=16, edns=True)
        flood = python_flood(address, packet, rate, duration, source="127.0.0.1")
        cpu = cpu_seconds(server.proc.pid) - before
        probe.stopping.set()
        probe.join()
    summary = probe.summary()
    return {
        "rrl": rrl,
        "offered_qps": round(flood["sent"] / duration),
        "replies": flood["received"],
        "sent_bytes": flood["sent_bytes"],
        "received_bytes": flood["received_bytes"],
        # Octets the server sent to the flooding network / octets it received from it.
        "amplification": round(flood["received_bytes"] / max(1, flood["sent_bytes"]), 3),
        "server_cpu_share": round(cpu / duration, 2),
        "probe_answered_pct": round(
            100 * (summary["probes"] - summary["probe_lost"]) / max(1, summary["probes"]), 2
        ),
        **summary,
    }


_ZONES: dict[Path, Path] = {}


def zone_folder_cached(work: Path) -> Path:
    if work not in _ZONES:
        _ZONES[work] = zone_folder(work)
    return _ZONES[work]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=50_000, help="flood queries per second")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of flood")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lbdns-rrl-") as work:
        rows = [run(Path(work), rrl, args.rate, args.duration) for rrl in (False, True)]
    print(
        f"flood of big.example.test TXT from 127.0.0.1 at {args.rate} q/s for {args.duration:g} s"
    )
    print(f"({load_note()})")
    print(
        f"{'RRL':4} {'offered':>8} {'replies':>8} {'MB in':>6} {'MB out':>7} {'amplif.':>8}"
        f" {'CPU':>5} {'probe ok':>9} {'p50':>8} {'p99':>8}"
    )
    for row in rows:
        print(
            f"{'on' if row['rrl'] else 'off':4} {row['offered_qps']:>8} {row['replies']:>8}"
            f" {row['sent_bytes'] / 1e6:>6.1f} {row['received_bytes'] / 1e6:>7.1f}"
            f" {row['amplification']:>8.3f}"
            f" {row['server_cpu_share']:>5.2f} {row['probe_answered_pct']:>8.2f}%"
            f" {row['p50_ms'] or 0:>6.3f}ms {row['p99_ms'] or 0:>6.3f}ms"
        )
    print("targets with RRL on: amplification <= 1.0, probe 100 % answered, p99 <= 5 ms")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
