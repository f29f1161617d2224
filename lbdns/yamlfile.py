"""YAML loading that remembers where every value came from.

Zone files and config files are plain YAML, but an error must name the file, the path inside it
and the line. We compose the node tree once, build plain Python data from it, and keep a table
from each path (a tuple of keys and indexes) to its line number.

Mapping keys are always the key's text: in a zone file keys are names, and YAML 1.1 would turn
an owner or host called ``no``, ``on`` or ``1.10`` into False, True or 1.1. For the same reason
the text of every plain scalar that YAML typed as something else than a string is kept in
``texts``, for values that are text by nature (a TXT record ``yes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lbdns.errors import LbdnsError

Where = tuple[Any, ...]


class LocatedYaml:
    """Plain data from a YAML document plus the line of every path in it."""

    def __init__(
        self,
        data: Any,
        lines: dict[Where, int],
        source: str,
        texts: dict[Where, str] | None = None,
    ):
        self.data = data
        self.lines = lines
        self.source = source
        self.texts = texts if texts is not None else {}

    def text_of(self, where: Where, value: Any) -> Any:
        """The text ``value`` was written as, when YAML made it a number, boolean or null."""
        return value if isinstance(value, str) else self.texts.get(where, value)

    def line_of(self, where: Where) -> int | None:
        # The closest enclosing path that has a line: a missing key is reported at its parent.
        while True:
            if where in self.lines:
                return self.lines[where]
            if not where:
                return None
            where = where[:-1]

    def error(self, cls: type[LbdnsError], where: Where, reason: str) -> LbdnsError:
        return cls(reason, source=self.source, path=describe(where, self.line_of(where)))


def describe(where: Where, line: int | None = None) -> str:
    text = ".".join(str(part) for part in where) if where else "(top)"
    return f"line {line}: {text}" if line else text


def load(path: Path, cls: type[LbdnsError]) -> LocatedYaml:
    """Read ``path`` as YAML; raise ``cls`` naming the file and line on any syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise cls(f"cannot read: {exc}", source=str(path)) from None
    return parse(text, str(path), cls)


def parse(text: str, source: str, cls: type[LbdnsError]) -> LocatedYaml:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise cls(f"invalid YAML: {_plain(problem)}", source=source, path=where) from None
    lines: dict[Where, int] = {}
    texts: dict[Where, str] = {}
    if node is None:
        return LocatedYaml(None, lines, source)
    data = _build(node, (), lines, texts, source, cls)
    return LocatedYaml(data, lines, source, texts)


# PyYAML's parser speaks of tokens; say what the writer of the file did instead. Its own words
# follow in parentheses, for searching.
_PROBLEMS = (
    (
        "expected <block end>, but found",
        "bad indentation: this line does not line up with the lines above it",
    ),
    (
        "mapping values are not allowed here",
        "bad indentation, or a value holding ': ' that needs quotes",
    ),
    ("could not find expected ':'", "bad indentation, or a key without ':'"),
    ("found character '\\t' that cannot start any token", "a tab: indent with spaces"),
)


def _plain(problem: str) -> str:
    for start, plain in _PROBLEMS:
        if problem.startswith(start):
            return f"{plain} ({problem})"
    return problem


def _build(
    node: yaml.Node, where: Where, lines: dict[Where, int], texts: dict[Where, str], source, cls
):
    lines[where] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else _scalar(key_node)
            if isinstance(key, (dict, list)):
                raise cls(
                    "mapping keys must be scalars",
                    source=source,
                    path=describe(where, key_node.start_mark.line + 1),
                )
            if key in result:
                raise cls(
                    f"duplicate key {key!r}",
                    source=source,
                    path=describe((*where, key), key_node.start_mark.line + 1),
                )
            result[key] = _build(value_node, (*where, key), lines, texts, source, cls)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*where, i), lines, texts, source, cls)
            for i, item in enumerate(node.value)
        ]
    value = _scalar(node)
    if not isinstance(value, str) and isinstance(node, yaml.ScalarNode):
        texts[where] = node.value
    return value


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return {} if isinstance(node, yaml.MappingNode) else []
    return _constructor.construct_object(node, deep=True)


# One loader instance turns scalar nodes into Python values with YAML's own typing rules.
_constructor = yaml.SafeLoader("")
