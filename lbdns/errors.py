"""The one error family of lbdns.

Every error a user can cause (a bad zone file, a bad config key, a bad report or API call)
is an ``LbdnsError``. Each carries enough context to be printed as is: the file, the path
inside it, and the reason. Code raises or logs, never both; only the CLI exits the process.
"""

from __future__ import annotations


class LbdnsError(Exception):
    """Base of all errors lbdns reports to a user."""

    def __init__(self, reason: str, *, source: str | None = None, path: str | None = None):
        self.reason = reason
        self.source = source
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.path) if part)
        return f"{where}: {self.reason}" if where else self.reason


class ConfigError(LbdnsError):
    """A server or agent config file (or command-line value) is invalid."""


class ZoneError(LbdnsError):
    """A zone file is invalid; ``source`` is the file, ``path`` the place inside it."""


class ManyErrors(LbdnsError):
    """Every error found in one pass over a file or folder (``lbdns check`` prints them all)."""

    def __init__(self, errors: list[LbdnsError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class ZoneErrors(ManyErrors):
    """The zone files are invalid: every ``ZoneError`` found."""


class ConfigErrors(ManyErrors):
    """A server or agent config file is invalid: every ``ConfigError`` found."""


class RequestError(LbdnsError):
    """An HTTP request is invalid. ``status`` is the HTTP status; ``field`` names the culprit."""

    def __init__(self, reason: str, *, status: int = 400, field: str | None = None):
        self.status = status
        self.field = field
        super().__init__(reason, path=field)


class NotFound(RequestError):
    def __init__(self, reason: str, *, field: str | None = None):
        super().__init__(reason, status=404, field=field)


class Conflict(RequestError):
    def __init__(self, reason: str, *, field: str | None = None):
        super().__init__(reason, status=409, field=field)


class Forbidden(RequestError):
    def __init__(self, reason: str):
        super().__init__(reason, status=403)


class Unauthorized(RequestError):
    def __init__(self, reason: str):
        super().__init__(reason, status=401)


class Unavailable(RequestError):
    """The shared state is unreachable; the write was not accepted (HTTP 503)."""

    def __init__(self, reason: str):
        super().__init__(reason, status=503)
