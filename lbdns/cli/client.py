"""A small client of the lbdns HTTP API, for the command-line tools.

The server is ``--server URL``, else ``$LBDNS_SERVER``, else ``http://127.0.0.1:8053``. The
token is ``--token``, else ``--token-file``, else ``$LBDNS_TOKEN``; with none, requests go
without one (enough on loopback when the server has no tokens configured).

Errors come back as ``ClientError`` carrying the server's message and the field it names.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from lbdns.errors import LbdnsError

DEFAULT_SERVER = "http://127.0.0.1:8053"


class ClientError(LbdnsError):
    """A request to the server failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, reason: str, *, status: int = 0, field: str | None = None, body=None):
        self.status = status
        self.field = field
        self.body = body
        super().__init__(reason)


def read_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    if token:
        return token
    if token_file:
        try:
            return Path(token_file).read_text().strip() or None
        except OSError as exc:
            raise ClientError(f"{token_file}: cannot read the token: {exc.strerror}") from None
    return os.environ.get("LBDNS_TOKEN") or None


class Client:
    """Synchronous JSON requests to one lbdns server."""

    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 10):
        base = server or os.environ.get("LBDNS_SERVER") or DEFAULT_SERVER
        if "://" not in base:
            base = "http://" + base
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        url = self.base + path
        if query:
            items = {k: v for k, v in query.items() if v is not None}
            if items:
                url += "?" + urllib.parse.urlencode(items)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode(errors="replace")
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            if isinstance(payload, dict) and "error" in payload:
                raise ClientError(
                    str(payload["error"]),
                    status=exc.code,
                    field=payload.get("field"),
                    body=payload,
                ) from None
            raise ClientError(f"HTTP {exc.code} {exc.reason}", status=exc.code) from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach {self.base}: {exc.reason}") from None
        except (TimeoutError, OSError) as exc:
            raise ClientError(f"cannot reach {self.base}: {exc}") from None
        return json.loads(text) if text else None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def post(self, path: str, body: Any = None, **query: Any) -> Any:
        return self.request("POST", path, body=body, query=query)

    def delete(self, path: str, **query: Any) -> Any:
        return self.request("DELETE", path, query=query)


def quote(part: str) -> str:
    """One path segment (a farm or host name)."""
    return urllib.parse.quote(part, safe="")
