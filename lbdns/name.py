"""Domain names as lbdns keeps them.

Inside lbdns a name is a lowercase, absolute, dotted string (``"chat.example.test."``) and, on
the wire path, the lowercase wire form of the same name (``b"\\x04chat\\x07example\\x04test\\x00"``).
Lowercasing the wire bytes is enough for DNS case-insensitivity: label length octets are below 64
and so are never ASCII letters.
"""

from __future__ import annotations

import re

MAX_NAME_OCTETS = 255
MAX_LABEL_OCTETS = 63


class NameError_(ValueError):
    """A name is not a valid domain name (message says why)."""


def absolute(name: str, origin: str) -> str:
    """Make ``name`` absolute and lowercase. ``@`` is the origin; a trailing dot means absolute."""
    if not isinstance(name, str) or not name:
        raise NameError_("a name must be a non-empty string")
    if name == "@":
        full = origin
    elif name.endswith("."):
        full = name
    else:
        full = f"{name}.{origin}" if origin != "." else f"{name}."
    full = full.lower()
    check(full)
    return full


def check(name: str) -> None:
    """Raise ``NameError_`` unless ``name`` is a valid absolute name lbdns can serve."""
    if name == ".":
        return
    if not name.endswith("."):
        raise NameError_(f"{name!r} is not absolute")
    if "\\" in name or any(ch.isspace() for ch in name):
        raise NameError_(f"{name!r}: escapes and white space are not supported in names")
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        raise NameError_(f"{name!r}: use the IDNA (xn--) form of international names") from None
    labels = name[:-1].split(".")
    for i, label in enumerate(labels):
        if not label:
            raise NameError_(f"{name!r} has an empty label")
        if len(label) > MAX_LABEL_OCTETS:
            raise NameError_(f"{name!r}: label {label[:20]!r}... is longer than 63 octets")
        if "*" in label and (label != "*" or i != 0):
            raise NameError_(f"{name!r}: '*' is only allowed as the whole leftmost label")
    if len(to_wire(name)) > MAX_NAME_OCTETS:
        raise NameError_(f"{name!r} is longer than 255 octets")


def to_wire(name: str) -> bytes:
    """Uncompressed wire form of an absolute dotted name."""
    if name == ".":
        return b"\x00"
    out = bytearray()
    for label in name[:-1].split("."):
        raw = label.encode("ascii")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


# Octets a label of a served name can hold; others are written \\DDD, so that a question's name
# with a '.', a backslash, white space or non-ASCII octets in a label never equals a served name.
_ODD_OCTET = re.compile(rb"[^\x21-\x2d\x2f-\x5b\x5d-\x7e]")
_ESCAPE = re.compile(r"\\(\d{3})")


def from_wire(wire: bytes) -> str:
    """Dotted form of an uncompressed wire name (as parsed from a question)."""
    parts = []
    for raw in _labels(wire):
        if _ODD_OCTET.search(raw):
            raw = _ODD_OCTET.sub(lambda m: b"\\%03d" % m[0][0], raw)
        parts.append(raw.decode("ascii"))
    return ".".join(parts) + "." if parts else "."


def labels(wire: bytes) -> tuple[bytes, ...]:
    """The labels of an uncompressed wire name, root excluded."""
    return tuple(_labels(wire))


def text_labels(name: str) -> tuple[bytes, ...]:
    """The exact labels of a dotted name, undoing the \\DDD escapes of ``from_wire``."""
    if name == ".":
        return ()
    return tuple(
        _ESCAPE.sub(lambda m: chr(int(m[1])), label).encode("latin-1")
        for label in name[:-1].split(".")
    )


def _labels(wire: bytes):
    i = 0
    while wire[i]:
        n = wire[i]
        yield wire[i + 1 : i + 1 + n]
        i += 1 + n


def parent(name: str) -> str | None:
    """The parent of an absolute name; ``None`` for the root."""
    if name == ".":
        return None
    rest = name.split(".", 1)[1]
    return rest or "."


def is_subdomain(name: str, of: str) -> bool:
    return of == "." or name == of or name.endswith("." + of)
