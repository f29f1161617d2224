"""The ``lbdns`` command: serve, check, and the client commands that talk to a server's API.

Only this module exits the process. Errors are ``LbdnsError``s printed as
``file: path: reason`` lines; the exit code is 1 on any error, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from lbdns import __version__
from lbdns.errors import LbdnsError, ManyErrors


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand and option (shell completion reads it too)."""
    parser = argparse.ArgumentParser(prog="lbdns", description="Load-aware authoritative DNS.")
    parser.add_argument("-V", "--version", action="version", version=f"lbdns {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ManyErrors as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        return 1
    except LbdnsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, help="config file (YAML)")
    p.add_argument("--zones", help="folder of zone files (default: zones)")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "zones",
        "dns",
        "http",
        "state",
        "data_dir",
        "log_format",
        "log_level",
        "query_log",
        "check_source",
        "workers",
    )
    return {key: getattr(args, key, None) for key in keys}


def _serve_command(commands) -> None:
    p = commands.add_parser("serve", help="serve the zones over DNS and the HTTP API")
    _server_options(p)
    p.add_argument(
        "--dns",
        action="append",
        metavar="HOST:PORT",
        help="DNS listen address, UDP and TCP; repeat for more "
        "(default: 0.0.0.0 and :: on port 53 as root or with CAP_NET_BIND_SERVICE, else 5353)",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="HTTP API address (default 127.0.0.1:8053; 'off' to disable)",
    )
    p.add_argument("--state", metavar="URL", help="memory:// (default) or redis://host:port/db")
    p.add_argument(
        "--data-dir",
        dest="data_dir",
        metavar="DIR",
        help="where the embedded store keeps host changes",
    )
    p.add_argument("--log-format", dest="log_format", choices=("text", "json"))
    p.add_argument("--log-level", dest="log_level", choices=("debug", "info", "warning", "error"))
    p.add_argument(
        "--query-log",
        dest="query_log",
        type=float,
        metavar="FRACTION",
        help="log this fraction of DNS queries (0 to 1; default 0, off)",
    )
    p.add_argument(
        "--check-source",
        dest="check_source",
        metavar="ADDRESS",
        help="local address the health-check probes leave from (default: the kernel's choice)",
    )
    p.add_argument(
        "--workers",
        type=_workers_arg,
        metavar="N|auto",
        help="DNS processes (default auto: one per CPU, at most 16; 1 for a single process)",
    )
    p.set_defaults(run=_serve)


def _workers_arg(text: str) -> int | str:
    # The config's own check refuses a bad number and says why; argparse only turns digits into
    # the integer a YAML file would give.
    return int(text) if text.isdigit() else text


def _serve(args: argparse.Namespace) -> int:
    from lbdns import config as config_module
    from lbdns import logs
    from lbdns.server import Server

    config = config_module.load(args.config, config_overrides(args))
    logs.setup(config.log_format, config.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        uvloop = None

    async def run() -> None:
        server = Server(config)
        try:
            await server.start()
            server.install_signal_handlers()
            await server.serve_forever()
        finally:
            await server.close()

    if uvloop is not None:
        uvloop.run(run())
    else:
        asyncio.run(run())
    return 0


def _check_command(commands) -> None:
    p = commands.add_parser("check", help="validate the config and zone files")
    _server_options(p)
    p.set_defaults(run=_check)


def _zones_folder(args: argparse.Namespace) -> Path:
    # The config has errors: still check the zones it names, so that one run shows everything.
    if args.zones:
        return Path(args.zones)
    if args.config is not None:
        from lbdns import yamlfile

        try:
            data = yamlfile.load(args.config, LbdnsError).data
        except LbdnsError:
            data = None
        zones = data.get("zones") if isinstance(data, dict) else None
        if isinstance(zones, str):
            return args.config.parent / zones
    return Path("zones")


def _check(args: argparse.Namespace) -> int:
    from lbdns import config as config_module
    from lbdns.errors import ManyErrors as Errors
    from lbdns.store import default_data_dir
    from lbdns.zone.parse import load_folder, skipped_files
    from lbdns.zone.serials import SerialBook

    errors = []
    config = None
    try:
        config = config_module.load(args.config, config_overrides(args))
    except Errors as exc:
        errors.extend(exc.errors)
    except LbdnsError as exc:
        errors.append(exc)
    zones_dir = config.zones if config else _zones_folder(args)
    zones = {}
    try:
        # The serials the server would serve: read (never written) from its data dir.
        remembered = SerialBook(config.data_dir or default_data_dir()).load() if config else {}
        zones = load_folder(zones_dir, remembered=remembered)
    except Errors as exc:
        errors.extend(exc.errors)
    if zones:
        for path in skipped_files(zones_dir):
            print(f"warning: {path}: skipped: zone files end in .yaml or .yml", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    for zone in zones.values():
        print(
            f"ok: {zone.origin} from {zone.source}: {len(zone.farms)} farm(s), serial {zone.serial}"
        )
    return 0


def _completion_command(commands) -> None:
    p = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script for bash or zsh, e.g. "
        "`lbdns completion bash > /etc/bash_completion.d/lbdns` or "
        "`lbdns completion zsh > ~/.zfunc/_lbdns`.",
    )
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    p.set_defaults(run=_completion)


def _completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


# Each entry adds one subcommand. Client commands (hosts, farms, status, agent) add theirs here.
COMMANDS = [_serve_command, _check_command, _completion_command]


def _admin_commands(commands) -> None:
    from lbdns.cli.admin import COMMANDS as admin_commands

    for register in admin_commands:
        register(commands)


COMMANDS.append(_admin_commands)


def _status_command(commands) -> None:
    from lbdns.cli.status import register

    register(commands)


COMMANDS.append(_status_command)


def _agent_command(commands) -> None:
    from lbdns.agent.main import register_command

    register_command(commands)


COMMANDS.append(_agent_command)


if __name__ == "__main__":
    sys.exit(main())
