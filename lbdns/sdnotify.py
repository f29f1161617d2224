"""The systemd notification protocol (``sd_notify``), for ``Type=notify`` units.

systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket: a path, or ``@name`` for the abstract
namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). lbdns sends:

| when                                          | message                                      |
|-----------------------------------------------|----------------------------------------------|
| zones loaded, DNS and HTTP sockets bound      | ``READY=1`` and a ``STATUS=`` line           |
| SIGHUP received, before re-reading the zones  | ``RELOADING=1`` and ``MONOTONIC_USEC=<now>`` |
| the reload is over (whether it worked or not) | ``READY=1`` and a ``STATUS=`` with the result|
| every half of ``WATCHDOG_USEC``               | ``WATCHDOG=1``, from the event loop          |
| SIGTERM or SIGINT received                    | ``STOPPING=1``                               |

One datagram per message and no dependency: the protocol is that small. Without
``NOTIFY_SOCKET`` every call is a no-op. A send that fails (systemd gone) is logged once at
debug level and otherwise ignored: notification is advice to the service manager, never a
reason to stop serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("lbdns")


class Notifier:
    """Sends state changes to the service manager named by ``NOTIFY_SOCKET``."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: a leading NUL byte on the wire.
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields: str | int) -> None:
        """Send ``KEY=value`` lines (``ready=1`` becomes ``READY=1``) in one datagram."""
        if not self.address:
            return
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.debug("cannot notify the service manager at %s: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.send(ready=1, status=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (Type=notify-reload) match this to the reload it asked for.
        self.send(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> None:
        self.send(stopping=1, status="stopping")

    async def watchdog(self) -> None:
        """Send ``WATCHDOG=1`` every half watchdog interval until cancelled. It runs on the event
        loop, so a loop that stops turning stops the pings and systemd restarts the server."""
        if not self.address or self.watchdog_interval is None:
            return
        while True:
            self.send(watchdog=1)
            await asyncio.sleep(self.watchdog_interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, or None when there is no watchdog for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (a wrapper that exec'd us would have matched)
    return int(usec) / 2e6
