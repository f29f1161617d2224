"""Helpers for the observability tests: scrape /metrics, read /v1/status, post reports."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from support import http_request as http


def scrape(base: str, token: str | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    status, body, headers = http(base + "/metrics", token=token)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def status(base: str, token: str | None = None, history: int = 120) -> dict[str, Any]:
    code, body, _ = http(f"{base}/v1/status?history={history}", token=token)
    assert code == 200, body
    return json.loads(body)


def report(base: str, host: str, seq: int, connections: float, **extra: Any) -> int:
    body = {
        "farm": "chat.example.test.",
        "host": host,
        "seq": seq,
        "interval": extra.pop("interval", 1.0),
        "healthy": extra.pop("healthy", True),
        "metrics": {"connections": connections},
        **extra,
    }
    code, payload, _ = http(base + "/v1/report", body=body)
    return code
