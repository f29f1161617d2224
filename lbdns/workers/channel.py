"""One end of a worker's unix socket pair: newline-delimited JSON messages, both ways."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

MAX_MESSAGE = 64 * 1024 * 1024  # a hello carries every host's report and the host changes
MAX_BUFFERED = 256 * 1024 * 1024  # bytes queued for an end that does not read: it has hung


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Channel:
    """Messages (JSON objects) over a connected stream socket. ``send`` never awaits: a
    message is queued in the transport's buffer, so the sender's query path is never held."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_MESSAGE)
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> bool:
        """Queue one message; False when the other end has gone."""
        return self.send_encoded(encode(message))

    def send_encoded(self, line: bytes) -> bool:
        """Queue one message already encoded with ``encode`` (one encoding for many ends);
        False when the other end has gone or has stopped reading (the channel is then closed)."""
        writer = self._writer
        if writer.is_closing():
            return False
        if writer.transport.get_write_buffer_size() > MAX_BUFFERED:
            writer.close()
            return False
        writer.write(line)
        return True

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Every message until the other end closes."""
        while True:
            try:
                line = await self._reader.readline()
            except (ConnectionError, asyncio.LimitOverrunError, ValueError):
                return
            if not line:
                return
            yield json.loads(line)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError:
            pass

    def close(self) -> None:
        self._writer.close()
