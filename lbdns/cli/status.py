"""``lbdns status``: the farms and hosts of a running server as a terminal table.

Reads ``GET /v1/status`` (the same data as the status page). States are coloured when stdout is
a terminal (``NO_COLOR`` turns that off); ``--watch`` redraws every ``--interval`` seconds;
``--json`` prints the server's JSON as is, for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

from lbdns.balance.capacity import percent
from lbdns.cli.client import Client, read_token

COLOURS = {
    "up": "32",  # green
    "new": "37",
    "stale": "33",  # yellow
    "down": "31;1",  # bold red
    "draining": "36",
    "drained": "34",
    "disabled": "35",
}
COLUMNS = (
    "host",
    "state",
    "score",
    "conns",
    "capacity",
    "report age",
    "share",
    "answers",
    "check",
)


def register(commands) -> None:
    p = commands.add_parser("status", help="show the farms and hosts of a running server")
    p.add_argument("--server", metavar="URL", help="the server's HTTP API (default: %(default)s)")
    p.add_argument("--token", help="read token (default: $LBDNS_TOKEN)")
    p.add_argument("--token-file", dest="token_file", metavar="FILE", help="file holding it")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--watch", action="store_true", help="redraw until interrupted")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="--watch period")
    p.set_defaults(run=run)


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)


def _percent(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _age(value: Any) -> str:
    return "never" if value is None else f"{value:.1f}s"


RIGHT_ALIGNED = frozenset(range(2, len(COLUMNS) - 1))


def _check(host: dict[str, Any]) -> str:
    """``up``, ``down 2/3`` (servers seeing it down / servers probing), with the reason of a
    host that is not up, or ``-`` for a host without checks."""
    check = host.get("check")
    text = "-"
    if check:
        text = check["verdict"]
        if check["servers"] > 1 or check["down"]:
            text += f" {check['down']}/{check['servers']}"
    reason = host.get("reason")
    if reason and host.get("state") != "up" and reason != "admin":
        text += f" ({reason})"
    return text


def _row(cells: tuple[str, ...], widths: list[int], state: str | None, colour: bool) -> str:
    out = []
    for i, cell in enumerate(cells):
        text = cell.rjust(widths[i]) if i in RIGHT_ALIGNED else cell.ljust(widths[i])
        if i == 1 and state and colour:
            # Colour after padding so the escape codes do not upset the column widths.
            text = f"\x1b[{COLOURS.get(state, '0')}m{text}\x1b[0m"
        out.append(text)
    return "    " + "  ".join(out).rstrip()


def render(data: dict[str, Any], colour: bool) -> str:
    """The status as text lines: per zone, per farm, a table of hosts."""
    lines = []
    store = data.get("store", {})
    health = "healthy" if store.get("healthy") else "UNHEALTHY"
    lines.append(
        f"store {store.get('kind', '?')} ({health}), up {data.get('uptime', 0):.0f}s, "
        f"{data['dns']['udp_queries']} UDP / {data['dns']['tcp_queries']} TCP queries"
    )
    for zone in data["zones"]:
        lines.append("")
        lines.append(f"zone {zone['origin']} serial {zone['serial']}")
        for farm in zone["farms"]:
            needed = (farm.get("scale") or {}).get("hosts_needed")
            lines.append(
                f"  farm {farm['name']}  policy {farm['policy']}  utilisation "
                f"{percent(farm['utilisation'])}  hosts needed {_number(needed)}  "
                f"balance {_number(farm['balance'], 2)}  "
                f"up {farm['up']} stale {farm['stale']} down {farm['down']}"
            )
            rows = [
                (
                    h["name"],
                    h["state"],
                    _number(h["score"]),
                    _number(h["connections"]),
                    _number(h["capacity"]),
                    _age(h["report_age"]),
                    _percent(h["share"]),
                    str(h["answers"]),
                    _check(h),
                )
                for h in farm["hosts"]
            ]
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
            lines.append(_row(COLUMNS, widths, None, colour))
            lines.extend(_row(row, widths, row[1], colour) for row in rows)
            for host in farm["hosts"]:
                drain = host.get("drain")
                if drain and drain["waiting_for"]:
                    waits = "; ".join(drain["waiting_for"])
                    lines.append(f"    {host['name']} drain waits for {waits}")
    return "\n".join(lines)


def _use_colour(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def run(args: argparse.Namespace) -> int:
    client = Client(args.server, read_token(args.token, args.token_file))
    colour = _use_colour(sys.stdout)
    while True:
        data = client.get("/v1/status", history=0)
        text = json.dumps(data, indent=2) if args.json else render(data, colour)
        if args.watch and sys.stdout.isatty():
            sys.stdout.write("\x1b[H\x1b[2J")  # home and clear: redraw in place
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        if not args.watch:
            return 0
        if not sys.stdout.isatty():
            sys.stdout.write("\n")
        time.sleep(max(0.2, args.interval))
