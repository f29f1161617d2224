"""Custom metrics from the application: a command's output or a local HTTP endpoint's JSON.

A command prints either one number (the metric is the source's ``name``) or lines of
``name value``. A URL returns a JSON object whose numeric top-level members become metrics (others
are skipped), or one bare number, named by ``name``. Each source has a timeout; a source that fails or times out
contributes nothing to that report, and the failure is logged (rate-limited).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import aiohttp

from lbdns.agent.config import BUILTIN_METRICS, MetricSource
from lbdns.errors import LbdnsError
from lbdns.validate import METRIC_NAME


class MetricError(LbdnsError):
    """A custom metric source failed or printed something that is not a metric."""


async def collect(source: MetricSource, session: aiohttp.ClientSession) -> dict[str, float]:
    """Read one source; raise ``MetricError`` saying why it gave nothing."""
    if source.command is not None:
        text = await run_command(source.command, source.timeout)
        return parse_text(text, source.name)
    try:
        timeout = aiohttp.ClientTimeout(total=source.timeout)
        async with session.get(source.url, timeout=timeout) as response:
            body = await response.read()
            if response.status != 200:
                raise MetricError(f"{source.url}: status {response.status}")
    except TimeoutError:
        raise MetricError(f"{source.url}: no answer within {source.timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise MetricError(f"{source.url}: {exc}") from None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MetricError(f"{source.url}: the answer is not JSON") from None
    return parse_json(data, source.name, source.url or "")


async def run_command(argv: tuple[str, ...], timeout: float) -> str:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise MetricError(f"{argv[0]}: cannot run: {exc.strerror}") from None
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise MetricError(f"{_show(argv)}: still running after {timeout:g} s; killed") from None
    if process.returncode != 0:
        raise MetricError(f"{_show(argv)}: exit status {process.returncode}")
    return out.decode("utf-8", "replace")


def _show(argv: tuple[str, ...]) -> str:
    return argv[2] if argv[:2] == ("/bin/sh", "-c") else " ".join(argv)


def parse_text(text: str, name: str | None) -> dict[str, float]:
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and len(lines[0]) == 1:
        if name is None:
            raise MetricError("printed a bare number but the source has no name")
        return {name: _value(lines[0][0], name)}
    out = {}
    for i, parts in enumerate(lines, 1):
        if len(parts) != 2:
            raise MetricError(f"output line {i}: expected 'name value', got {' '.join(parts)!r}")
        out[_name(parts[0])] = _value(parts[1], parts[0])
    return out


def parse_json(data: Any, name: str | None, where: str) -> dict[str, float]:
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        if name is None:
            raise MetricError(f"{where}: a bare number needs the source's name")
        return {name: _value(data, name)}
    if not isinstance(data, dict):
        raise MetricError(f"{where}: expected a JSON object of numbers")
    out = {}
    for key, value in data.items():
        # An application's stats document holds more than metrics: members that are not
        # numbers, or whose names are not metric names, are skipped rather than failing it all.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not METRIC_NAME.match(key) or key in BUILTIN_METRICS:
            continue
        out[key] = _value(value, key)
    return out


def _name(text: str) -> str:
    if not METRIC_NAME.match(text):
        raise MetricError(f"{text!r} is not a metric name (lower-case letters, digits, '_')")
    if text in BUILTIN_METRICS:
        raise MetricError(f"{text!r} is measured by the agent itself")
    return text


def _value(raw: Any, name: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise MetricError(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise MetricError(f"{name}: {raw!r} is not a non-negative number")
    return value
