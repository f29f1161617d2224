"""A UDP listener of a chosen kind on its own event loop thread, for the listener tests."""

from __future__ import annotations

import asyncio
import threading

from lbdns.dnsserver.transport import TransportStats, UdpCache, UdpListener, bind_udp


def echo(data: bytes, client: str, tcp: bool) -> bytes | None:
    """Answer b"<client>|<query>", drop queries starting with b"drop", inflate b"big", answer
    b"array" with a bytearray."""
    if data.startswith(b"drop"):
        return None
    if data.startswith(b"big"):
        return b"B" * 6000
    if data.startswith(b"array"):
        return bytearray(b"A" * 100)  # dnslib packs into a bytearray
    return client.encode() + b"|" + data


class Served:
    """A UdpListener on its own event loop thread, bound to ``host`` on a free port."""

    def __init__(self, host: str, mode: str, respond=echo, cache: UdpCache | None = None):
        self.sock = bind_udp(host, 0)
        self.address = self.sock.getsockname()[:2]
        self.stats = TransportStats()
        self.listener = UdpListener(
            self.sock,
            respond,
            self.stats,
            batch=mode != "one-by-one",
            compiled=mode == "compiled",
            cache=cache,
        )
        assert (
            self.listener.kind
            == {
                "compiled": "batched, compiled loop",
                "batched": "batched",
                "one-by-one": "one datagram per system call",
            }[mode]
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.listener.start(self.loop)
        self.loop.run_forever()

    def __enter__(self) -> Served:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.listener.close()
        self.loop.close()
