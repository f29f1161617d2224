"""The one validation vocabulary: server config, agent config, zone files, tokens and API bodies.

Every parser here takes the value, where it was found (a path of keys and indexes) and a ``fail``
callback, reports each problem through ``fail`` with a reason that says what is allowed, and
returns the parsed value or None. Callers collect the failures (a file: every problem with its
line; an API body: the first, as a 400 naming the field), so the wording of a rule is the same
wherever a user meets it.

Numbers are finite: JSON's ``1e400`` and YAML's ``.inf``/``.nan`` are refused like any other value
out of range, so nothing lbdns stores or serves back can be a non-JSON ``Infinity`` or ``NaN``.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

Where = tuple
Fail = Callable[[Where, str], None]

# Metric names and how many a report may carry: the ingest API enforces them, the agent checks
# its config against them.
METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
METRIC_NAME_RULE = "metric names are lower-case letters, digits and '_' (at most 64)"
MAX_METRICS = 32
MAX_CAPACITY = 1e9  # a host's capacity, in the units of its farm's score
MIN_SECRET = 8  # characters of a token or secret


def is_number(value: Any) -> bool:
    """A JSON/YAML number that is finite (``bool`` is not a number here)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def number(
    value: Any,
    where: Where,
    fail: Fail,
    low: float,
    high: float,
    *,
    integer: bool = False,
    positive: bool = False,
) -> float | int | None:
    """A finite number from ``low`` to ``high`` (``positive``: above 0, whatever ``low`` says)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(where, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
        return None
    if not math.isfinite(value):
        fail(where, f"must be a finite number, got {value!r}")
        return None
    if integer and not isinstance(value, int):
        fail(where, f"must be an integer, got {value!r}")
        return None
    if positive and not value > 0:
        fail(where, f"must be a positive number (at most {_show(high)}), got {value!r}")
        return None
    if not low <= value <= high:
        fail(where, f"must be between {_show(low)} and {_show(high)}, got {value!r}")
        return None
    return value


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def string(value: Any, where: Where, fail: Fail) -> str | None:
    if not isinstance(value, str) or not value:
        fail(where, f"must be a non-empty string, got {value!r}")
        return None
    return value


def boolean(value: Any, where: Where, fail: Fail) -> bool | None:
    if not isinstance(value, bool):
        fail(where, f"must be true or false, got {value!r}")
        return None
    return value


def choice(value: Any, where: Where, fail: Fail, options: tuple[str, ...]) -> str | None:
    if value not in options:
        fail(where, f"must be one of {', '.join(options)}, got {value!r}")
        return None
    return value


def known_keys(body: Any, where: Where, fail: Fail, allowed: set[str], what: str) -> bool:
    """Whether ``body`` is a mapping; each unknown key is reported with the allowed ones (the known
    ones are still checked by the caller, so one pass lists every problem)."""
    if not isinstance(body, dict):
        fail(where, f"must be a mapping ({what})")
        return False
    for key in body:
        if key not in allowed:
            fail((*where, key), f"unknown key (expected one of {', '.join(sorted(allowed))})")
    return True


def labels(value: Any, where: Where, fail: Fail) -> dict[str, str] | None:
    """Host labels: a mapping of strings to strings (numbers, booleans and nulls are refused, not
    turned into strings, so a label reads back as it was written)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail(where, "labels must be a mapping of strings to strings")
        return None
    for key, item in value.items():
        if not isinstance(key, str) or not key or not isinstance(item, str):
            fail((*where, str(key)), f"labels are strings, got {key!r}: {item!r}")
            return None
    return dict(value)


def secret(body: dict, prefix: str, where: Where, fail: Fail, what: str = "token") -> str | None:
    """``<prefix>``, ``<prefix>_file`` or ``<prefix>_env``: at most one, a string of 8+ chars
    (None when none is given)."""
    keys = [k for k in (prefix, f"{prefix}_file", f"{prefix}_env") if k in body]
    if not keys:
        return None
    if len(keys) > 1:
        fail((*where, keys[1]), f"give only one of {', '.join(keys)}")
        return None
    key = keys[0]
    value = body[key]
    if not isinstance(value, str) or not value:
        fail((*where, key), f"must be a non-empty string, got {value!r}")
        return None
    if key.endswith("_file"):
        try:
            value = Path(value).read_text().strip()
        except OSError as exc:
            fail((*where, key), f"cannot read {value}: {exc.strerror}")
            return None
    elif key.endswith("_env"):
        name = value
        value = os.environ.get(name)
        if not value:
            fail((*where, key), f"environment variable {name} is not set")
            return None
    if len(value) < MIN_SECRET:
        fail((*where, key), f"a {what} is at least {MIN_SECRET} characters")
        return None
    return value


@functools.lru_cache(maxsize=4096)  # asked for every API request without tokens
def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (an IP address, or ``localhost``) is a loopback address."""
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is an IPv4 loopback client
    return (mapped or ip).is_loopback


def is_local_url(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")
