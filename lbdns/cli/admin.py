"""``lbdns hosts``, ``lbdns farms`` and ``lbdns reload``: the admin API from the command line.

Each command prints a readable table, or the server's JSON with ``--json``, and exits 1 with the
server's message when the request fails (docs/cli.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

from lbdns.balance.capacity import percent
from lbdns.cli.client import Client, ClientError, quote, read_token


def client_options(p: argparse.ArgumentParser) -> None:
    """--server, --token, --token-file and --json, shared by every client command."""
    p.add_argument(
        "--server",
        metavar="URL",
        help="lbdns HTTP API (default $LBDNS_SERVER or http://127.0.0.1:8053)",
    )
    p.add_argument("--token", help="bearer token (default $LBDNS_TOKEN)")
    p.add_argument("--token-file", dest="token_file", metavar="FILE", help="read the token here")
    p.add_argument("--json", action="store_true", help="print the server's JSON")


def make_client(args: argparse.Namespace) -> Client:
    return Client(args.server, read_token(args.token, args.token_file))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def table(rows: list[list[Any]], header: list[str]) -> str:
    text = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in text
    )


def _age(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _util(value: float | None) -> str:
    return percent(value)  # one definition and one format with the page and `lbdns status`


def _advice(scale: dict[str, Any]) -> str:
    change = scale.get("change")
    if change is None:
        return "no load reported"
    if change > 0:
        return f"add {change} host(s) to reach {100 * scale['target']:.0f}%"
    if change < 0:
        return f"{-change} host(s) could go (target {100 * scale['target']:.0f}%)"
    return f"right size for {100 * scale['target']:.0f}%"


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _state(host: dict[str, Any]) -> str:
    drain = host.get("drain")
    if host["state"] == "draining" and drain:
        return f"draining {drain['running_for']:.0f}s"
    return host["state"]


def hosts_table(hosts: list[dict[str, Any]]) -> str:
    rows = [
        [
            h["name"],
            _state(h),
            " ".join(h["a"] + h["aaaa"]),
            f"{h['capacity']:g}",
            _score(h.get("score")),
            _age(h.get("report_age")),
            _labels(h.get("labels", {})),
        ]
        for h in hosts
    ]
    return table(rows, ["HOST", "STATE", "ADDRESSES", "CAPACITY", "SCORE", "REPORT", "LABELS"])


def _labels_arg(values: list[str] | None) -> dict[str, str]:
    labels = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ClientError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


# -- hosts ----------------------------------------------------------------------------------


def _farm_path(farm: str) -> str:
    return f"/v1/farms/{quote(farm)}"


def _hosts_list(args: argparse.Namespace) -> int:
    data = make_client(args).get(_farm_path(args.farm))
    hosts = data["hosts"]
    if args.selector:
        want = dict(item.partition("=")[::2] for item in args.selector.split(","))
        hosts = [h for h in hosts if all(h["labels"].get(k) == v for k, v in want.items())]
    if args.json:
        _print_json(hosts)
    else:
        print(hosts_table(hosts))
    return 0


def _host_body(args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if base is not None:
        body = {k: base[k] for k in ("a", "aaaa", "capacity", "labels")}
    if args.a is not None:
        body["a"] = args.a
    if args.aaaa is not None:
        body["aaaa"] = args.aaaa
    if args.capacity is not None:
        body["capacity"] = args.capacity
    labels = dict(body.get("labels", {}))
    labels.update(_labels_arg(args.label))
    for key in getattr(args, "unlabel", None) or []:
        labels.pop(key, None)
    if labels or "labels" in body:
        body["labels"] = labels
    return body


def _hosts_put(args: argparse.Namespace) -> int:
    client = make_client(args)
    path = f"{_farm_path(args.farm)}/hosts/{quote(args.host)}"
    if args.command_name == "update":
        current = client.get(path)
        body = _host_body(args, current)
    else:
        body = _host_body(args)
    host = client.put(path, body)
    if args.json:
        _print_json(host)
    else:
        verb = "updated" if args.command_name == "update" else "added"
        print(f"{verb} {host['name']}")
        print(hosts_table([host]))
    return 0


def _target(args: argparse.Namespace, action: str) -> tuple[str, dict[str, Any]]:
    """The path and query for an action on one host or on every host a selector matches."""
    if bool(args.host) == bool(args.selector):
        raise ClientError("give a HOST or --selector LABEL=VALUE[,...] (one of them)")
    if args.selector:
        return f"{_farm_path(args.farm)}/hosts:{action}", {"selector": args.selector}
    suffix = "" if action == "remove" else f"/{action}"
    return f"{_farm_path(args.farm)}/hosts/{quote(args.host)}{suffix}", {}


# The server's refusals end with an HTTP recipe ("(POST .../drain) or add ?force=true"); on the
# command line the recipe is a command.
_HTTP_RECIPE = re.compile(r"[:;]?\s*(drain (it|the hosts) first\b.*|\((POST|add \?force)[^)]*\))$")


def _cli_recipe(exc: ClientError, args: argparse.Namespace) -> ClientError:
    if exc.status != 409:
        return exc
    reason = _HTTP_RECIPE.sub("", str(exc)).rstrip(" :;")
    target = f"--selector {args.selector}" if args.selector else args.host
    drain = f"lbdns hosts drain {args.farm} {target} --wait"
    remove = f"lbdns hosts remove {args.farm} {target} --force"
    if "still draining" in reason:
        return ClientError(f"{reason}; wait for it (`{drain}`) or remove it now (`{remove}`)")
    return ClientError(f"{reason}: drain it first (`{drain}`) or remove it now (`{remove}`)")


def _hosts_remove(args: argparse.Namespace) -> int:
    client = make_client(args)
    path, query = _target(args, "remove")
    if args.force:
        query["force"] = "true"
    try:
        result = client.post(path, **query) if args.selector else client.delete(path, **query)
    except ClientError as exc:
        raise _cli_recipe(exc, args) from None
    if args.json:
        _print_json(result)
    else:
        print(f"removed {', '.join(result['removed'])} from {result['farm']}")
    return 0


def _hosts_action(args: argparse.Namespace) -> int:
    client = make_client(args)
    action = args.command_name
    path, query = _target(args, action)
    if action == "drain":
        query.update(threshold=args.threshold, grace=args.grace)
    result = client.post(path, **query)
    hosts = result.get("hosts", [result])
    if action == "drain" and args.wait:
        hosts = _wait_drained(client, args, [h["name"] for h in hosts])
    if args.json:
        _print_json(hosts if args.selector else hosts[0])
    else:
        print(hosts_table(hosts))
    return 0


def _wait_drained(
    client: Client, args: argparse.Namespace, names: list[str]
) -> list[dict[str, Any]]:
    """Poll until every host is drained; a progress line on stderr; ClientError on timeout."""
    deadline = time.monotonic() + args.timeout
    tty = sys.stderr.isatty()
    last_line = ""
    last_print = 0.0
    while True:
        farm = client.get(_farm_path(args.farm))
        hosts = [h for h in farm["hosts"] if h["name"] in names]
        pending = [h for h in hosts if h["state"] != "drained"]
        if len(hosts) < len(names):
            gone = sorted(set(names) - {h["name"] for h in hosts})
            raise ClientError(f"host(s) {', '.join(gone)} left the farm while draining")
        if not pending:
            if tty:
                print("\r\033[K", end="", file=sys.stderr)
            print(f"drained: {', '.join(names)}", file=sys.stderr)
            return hosts
        line = "; ".join(_progress(h) for h in pending)
        now = time.monotonic()
        if tty:
            print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
        elif line != last_line and now - last_print >= 1.0 or now - last_print >= 5.0:
            print(line, file=sys.stderr, flush=True)
            last_print = now
        last_line = line
        if now >= deadline:
            if tty:
                print(file=sys.stderr)
            raise ClientError(f"not drained after {args.timeout:g} s: {line}")
        time.sleep(min(args.interval, max(0.05, deadline - now)))


def _progress(host: dict[str, Any]) -> str:
    drain = host.get("drain")
    if host["state"] != "draining" or not drain:
        return f"{host['name']}: {host['state']} (not draining)"
    waits = []
    if drain["connections"] is not None and drain["connections"] > drain["threshold"]:
        waits.append(f"{drain['connections']:g} connections > {drain['threshold']:g}")
    if drain["answers_expire_in"] > 0:
        waits.append(f"answers expire in {drain['answers_expire_in']:.1f}s")
    return f"{host['name']}: draining {drain['running_for']:.1f}s, waiting for " + ", ".join(
        waits or ["the next check"]
    )


def _hosts_command(commands) -> None:
    p = commands.add_parser("hosts", help="list and change the hosts of a farm")
    sub = p.add_subparsers(dest="hosts_command", required=True, metavar="ACTION")

    def command(name: str, help_text: str, run) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text)
        client_options(c)
        c.add_argument("farm", metavar="FARM", help="farm name (trailing dot optional)")
        c.set_defaults(run=run, command_name=name)
        return c

    c = command("list", "the hosts of a farm with state, score and report age", _hosts_list)
    c.add_argument("--selector", metavar="LABEL=VALUE[,...]", help="only hosts with these labels")
    for name, help_text in (("add", "add a host (or replace it)"), ("update", "change a host")):
        c = command(name, help_text, _hosts_put)
        c.add_argument("host", metavar="HOST")
        c.add_argument("--a", action="append", metavar="IPV4", help="IPv4 address (repeat)")
        c.add_argument("--aaaa", action="append", metavar="IPV6", help="IPv6 address (repeat)")
        c.add_argument("--capacity", type=float, help="capacity in score units (default 1)")
        c.add_argument("--label", action="append", metavar="KEY=VALUE", help="label (repeat)")
        if name == "update":
            c.add_argument("--unlabel", action="append", metavar="KEY", help="drop a label")
    c = command("remove", "remove a drained host (or any, with --force)", _hosts_remove)
    _host_or_selector(c)
    c.add_argument("--force", action="store_true", help="remove even if not drained")
    c = command("drain", "stop new answers to a host and wait for it to empty", _hosts_action)
    _host_or_selector(c)
    c.add_argument("--threshold", type=float, help="connections that count as empty (default 0)")
    c.add_argument("--grace", type=float, help="seconds after TTL of the last answer (default 5)")
    c.add_argument("--wait", action="store_true", help="block until drained")
    c.add_argument("--timeout", type=float, default=300.0, help="for --wait (default 300 s)")
    c.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    for name, help_text in (("enable", "answer the host again"), ("disable", "stop at once")):
        c = command(name, help_text, _hosts_action)
        _host_or_selector(c)


def _host_or_selector(c: argparse.ArgumentParser) -> None:
    c.add_argument("host", metavar="HOST", nargs="?")
    c.add_argument("--selector", metavar="LABEL=VALUE[,...]", help="every host with these labels")


# -- farms ----------------------------------------------------------------------------------


def _farms_list(args: argparse.Namespace) -> int:
    data = make_client(args).get("/v1/farms")
    if args.json:
        _print_json(data["farms"])
        return 0
    rows = []
    for farm in data["farms"]:
        scale = farm["scale"]
        states = " ".join(f"{n} {s}" for s, n in sorted(farm["states"].items()))
        rows.append(
            [
                farm["name"],
                farm["policy"],
                states or "-",
                _util(scale["utilisation"]),
                _advice(scale),
            ]
        )
    print(table(rows, ["FARM", "POLICY", "HOSTS", "UTILISATION", "SCALE ADVICE"]))
    return 0


def _farms_show(args: argparse.Namespace) -> int:
    farm = make_client(args).get(_farm_path(args.farm))
    if args.json:
        _print_json(farm)
        return 0
    scale = farm["scale"]
    print(
        f"farm {farm['name']} (zone {farm['zone']}, TTL {farm['ttl']} s, policy {farm['policy']})"
    )
    print(
        f"utilisation {_util(scale['utilisation'])}: load {scale['load']:g} of capacity "
        f"{scale['capacity']:g} on {scale['up']} host(s) up; "
        f"hosts needed {scale['hosts_needed'] if scale['hosts_needed'] is not None else '-'}: "
        f"{_advice(scale)}"
    )
    print()
    print(hosts_table(farm["hosts"]))
    for host in farm["hosts"]:
        if host.get("drain") and host["drain"]["waiting_for"]:
            print(_progress(host))
    return 0


def _farms_assign(args: argparse.Namespace) -> int:
    chosen = make_client(args).get(_farm_path(args.farm) + "/assign", key=args.key)
    if args.json:
        _print_json(chosen)
        return 0
    addresses = " ".join(chosen["a"] + chosen["aaaa"])
    print(f"{chosen['host']} ({chosen['name']}) {addresses}")
    print(chosen["reason"])
    return 0


def _farms_command(commands) -> None:
    p = commands.add_parser("farms", help="farms with utilisation and scale advice")
    sub = p.add_subparsers(dest="farms_command", required=True, metavar="ACTION")
    c = sub.add_parser("list", help="every farm with host states and utilisation")
    client_options(c)
    c.set_defaults(run=_farms_list)
    c = sub.add_parser("show", help="one farm's hosts, utilisation and scale advice")
    client_options(c)
    c.add_argument("farm", metavar="FARM")
    c.set_defaults(run=_farms_show)
    c = sub.add_parser(
        "assign", help="a host for one new connection (charged as one), by key or by policy"
    )
    client_options(c)
    c.add_argument("farm", metavar="FARM")
    c.add_argument("--key", metavar="KEY", help="the affinity key (keyed farms)")
    c.set_defaults(run=_farms_assign)


# -- reload ---------------------------------------------------------------------------------


def _reload(args: argparse.Namespace) -> int:
    try:
        result = make_client(args).post("/v1/reload")
    except ClientError as exc:
        if args.json and exc.body is not None:
            _print_json(exc.body)
            return 1
        if exc.body and exc.body.get("errors"):
            for error in exc.body["errors"]:
                print(f"error: {error['message']}", file=sys.stderr)
            print("the old zones keep serving", file=sys.stderr)
            return 1
        raise
    if args.json:
        _print_json(result)
        return 0
    for origin, zone in sorted(result["zones"].items()):
        mark = " (changed)" if origin in result["changed"] else ""
        print(f"ok: {origin} serial {zone['serial']}{mark}")
    return 0


def _reload_command(commands) -> None:
    p = commands.add_parser("reload", help="make a running server re-read its zone files")
    client_options(p)
    p.set_defaults(run=_reload)


COMMANDS = [_hosts_command, _farms_command, _reload_command]
