"""The direct-asker scenario of benchmarks/balance.py (``--direct``): what a new user's first test
sees, with every part real.

Three TCP applications (listening sockets in this process, every connection accepted and held),
one ``lbdns agent`` each (connections counted on the application's port, a TCP health check on
that same port, reports every second), one ``lbdns serve`` with the farm (TTL 5 s), and 30
connections held on web2, none on web1 and web3. Then:

* a ``dig`` loop straight at lbdns (a plain UDP socket, no cache) at 2 and at 20 queries a
  second: the share of answers naming an empty host, and of answers with one record;
* through a real caching resolver (unbound, when installed): the load moves onto the host the
  resolver's answer names, and the time until the resolver's answer leaves it is measured
  (target: TTL + 1 s).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from balance import parse_answer  # the benchmarks folder is on the path (run as a script)

from lbdns.testing.process import LbdnsProcess, http_json, stop_process, wait_for
from lbdns.testing.unbound import UNBOUND, UnboundProcess

FARM = "web.direct.test."
TTL = 5
HOSTS = ("web1", "web2", "web3")
ADDRESS = {"192.0.2.1": "web1", "192.0.2.2": "web2", "192.0.2.3": "web3"}
ZONE = f"""\
zone: direct.test.
soa: {{}}
ns: [ns1]
records:
  ns1: {{A: 192.0.2.53}}
farms:
  web:
    ttl: {TTL}
    hosts:
      web1: {{a: 192.0.2.1}}
      web2: {{a: 192.0.2.2}}
      web3: {{a: 192.0.2.3}}
"""
UNBOUND_SERVER = "    qname-minimisation: no\n    prefetch: no\n"


class App:
    """A listening socket whose accepted connections are held until ``close_all``."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []  # both ends of the clients we opened
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)  # checks close theirs at once; clients stay

    def connect(self, n: int) -> None:
        for _ in range(n):
            self.held.append(socket.create_connection(("127.0.0.1", self.port), timeout=3))

    def close_all(self) -> None:
        for sock in self.held:
            sock.close()
        self.held.clear()

    def stop(self) -> None:
        self.close_all()
        self.listener.close()
        for sock in self.accepted:
            sock.close()


def query(qid: int) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in FARM.rstrip(".").split(".")) + b"\0"
    return qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + wire + b"\0\1\0\1"


def ask(sock: socket.socket, server: tuple[str, int], qid: int) -> list[str]:
    sock.sendto(query(qid), server)
    sock.settimeout(3)
    while True:
        data = sock.recv(4096)
        got, addresses, _ = parse_answer(data)
        if got == qid:
            return [ADDRESS.get(a, a) for a in addresses]


def dig_loop(server: tuple[str, int], rate: float, seconds: float, source: str) -> dict:
    """Queries at ``rate`` a second for ``seconds``, as ``dig`` in a shell loop would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    answers = []
    try:
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            answers.append(ask(sock, server, i + 1))
            delay = start + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        sock.close()
    n = len(answers)
    return {
        "rate": rate,
        "answers": n,
        "empty_host_share": sum(1 for a in answers if a and "web2" not in a) / n,
        "one_record_share": sum(1 for a in answers if len(a) == 1) / n,
    }


def through_unbound(tmp: Path, lbdns: LbdnsProcess, apps: dict[str, App], rounds: int) -> list:
    """Times until a caching resolver's answer leaves the host the load moved onto."""
    if UNBOUND is None:
        return []
    unbound = UnboundProcess(tmp, "direct.test.", lbdns.port, UNBOUND_SERVER).start()
    port = unbound.port
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    times = []
    try:
        qid = 0

        def resolve() -> list[str]:
            nonlocal qid
            qid = (qid + 1) & 0xFFFF
            message = bytearray(query(qid))
            message[2] |= 0x01  # RD: ask the resolver to recurse
            sock.sendto(bytes(message), ("127.0.0.1", port))
            sock.settimeout(3)
            while True:
                got, addresses, _ = parse_answer(sock.recv(4096))
                if got == qid:
                    return [ADDRESS.get(a, a) for a in addresses]

        for _ in range(rounds):
            named = resolve()[0]
            # The load moves onto the host the resolver's cached answer names.
            for app in apps.values():
                app.close_all()
            apps[named].connect(30)
            moved = time.monotonic()
            deadline = moved + 4 * TTL
            while time.monotonic() < deadline and named in resolve():
                time.sleep(0.1)
            times.append(time.monotonic() - moved)
            time.sleep(TTL + 1)  # the next round starts from a settled farm
    finally:
        sock.close()
        unbound.stop()
    return times


def run(seconds: float = 20.0, rounds: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="lbdns-direct-") as name:
        tmp = Path(name)
        zones = tmp / "zones"
        zones.mkdir()
        (zones / "direct.yaml").write_text(ZONE)
        apps = {host: App() for host in HOSTS}
        agents = []
        lbdns = LbdnsProcess(tmp, zones=zones).start(timeout=20)
        try:
            for host, app in apps.items():
                config = tmp / f"agent-{host}.yaml"
                config.write_text(
                    textwrap.dedent(f"""\
                    farm: {FARM}
                    host: {host}
                    interval: 1
                    servers: [{lbdns.http_url}]
                    connections: {{ports: [{app.port}]}}
                    health: {{checks: [{{tcp: "127.0.0.1:{app.port}"}}]}}
                    """)
                )
                log = open(tmp / f"agent-{host}.log", "wb")  # noqa: SIM115 (closed with it)
                agents.append(
                    (
                        subprocess.Popen(
                            [sys.executable, "-m", "lbdns", "agent", "-c", str(config)],
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        ),
                        log,
                    )
                )
            apps["web2"].connect(30)

            def settled() -> bool:
                status, info = http_json(f"{lbdns.http_url}/v1/farms/{FARM}/explain")
                if status != 200:
                    return False
                conns = {h["host"]: (h["metrics"] or {}).get("connections") for h in info["hosts"]}
                return conns == {"web1": 0, "web2": 30, "web3": 0}

            wait_for(settled, timeout=20, what="the agents' reports")
            time.sleep(3)  # a few reports, so that arrival rates are learned
            loops = [
                dig_loop(lbdns.dns[0], rate, seconds if rate < 10 else seconds / 2, source)
                for rate, source in ((2, "127.0.0.61"), (20, "127.0.0.62"))
            ]
            status, info = http_json(f"{lbdns.http_url}/v1/farms/{FARM}/explain")
            arrival = {h["host"]: h.get("arrival_rate") for h in info["hosts"]}
            unbound = through_unbound(tmp, lbdns, apps, rounds)
        finally:
            for proc, log in agents:
                stop_process(proc)
                log.close()
            lbdns.stop()
            for app in apps.values():
                app.stop()
    return {"loops": loops, "arrival_rates": arrival, "unbound_leave_s": unbound}


def print_report(result: dict) -> None:
    print(
        f"Direct asker: 3 hosts, 30 connections on web2, 0 on web1 and web3, TTL {TTL} s, "
        "real agents with a TCP health check on the app port"
    )
    print(f"{'queries/s':>9} {'answers':>8} {'empty host':>11} {'one record':>11}   target")
    for loop in result["loops"]:
        print(
            f"{loop['rate']:>9g} {loop['answers']:>8} {loop['empty_host_share']:>11.1%} "
            f"{loop['one_record_share']:>11.1%}   >= 95 %, one record"
        )
    print(f"arrival rates the servers learned (health checks excluded): {result['arrival_rates']}")
    leave = result["unbound_leave_s"]
    if leave:
        shown = ", ".join(f"{t:.1f}" for t in leave)
        print(f"through unbound: the loaded host left the answers after {shown} s (target <= 6)")
    else:
        print("through unbound: skipped (unbound is not installed)")
