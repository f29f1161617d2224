"""Writes lbdns/openapi.json, the OpenAPI description of the whole HTTP API.

Run ``python docs/openapi.py`` after changing an endpoint; tests/test_openapi.py checks that
every route of the application is described and that the file matches this script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "lbdns" / "openapi.json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Any], required: list[str] | None = None, **extra) -> dict:
    out: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        out["required"] = required
    return out


NUM = {"type": "number"}
INT = {"type": "integer"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
NULLABLE_NUM = {"type": ["number", "null"]}
STRINGS = {"type": "array", "items": STR}
LABELS = {"type": "object", "additionalProperties": STR}


def json_body(schema: dict, description: str = "") -> dict:
    out: dict[str, Any] = {"content": {"application/json": {"schema": schema}}}
    if description:
        out["description"] = description
    return out


def ok(schema: dict, description: str = "OK") -> dict:
    return {"description": description, **json_body(schema)}


def errors(*codes: int) -> dict[str, dict]:
    text = {
        400: "Invalid request; `field` names the culprit",
        401: "Missing or unknown bearer token",
        403: "The token may not do this (or, without tokens, the client is not on loopback)",
        404: "Unknown farm, host or action; `field` says which",
        409: "The host is not drained (DELETE without force)",
        413: "Body too large",
        422: "Reload refused: a zone file is invalid; the old zones keep serving",
        429: "Too many assignments from this address (config assign_rate); see Retry-After",
        503: "The shared state store is unreachable; the change was not accepted "
        "(assignments: no host of the farm can take a connection)",
    }
    return {str(c): {"description": text[c], **json_body(ref("Error"))} for c in codes}


FARM = {
    "name": "farm",
    "in": "path",
    "required": True,
    "schema": STR,
    "description": "Farm name; the trailing dot may be left out",
}
HOST = {
    "name": "host",
    "in": "path",
    "required": True,
    "schema": STR,
    "description": "Host name (1-63 letters, digits, '-', '_', '.')",
}
SELECTOR = {
    "name": "selector",
    "in": "query",
    "schema": STR,
    "description": "Label selector `key=value[,key=value...]`; all must match. "
    "Or give `selector` as an object in the JSON body.",
}
THRESHOLD = {
    "name": "threshold",
    "in": "query",
    "schema": NUM,
    "description": "Drain: connections at or below which the host counts as empty (default 0)",
}
GRACE = {
    "name": "grace",
    "in": "query",
    "schema": NUM,
    "description": "Drain: seconds added to the farm TTL after the last answer naming "
    "the host (default 5)",
}
FORCE = {
    "name": "force",
    "in": "query",
    "schema": {"type": "string", "enum": ["true", "false"]},
    "description": "Remove even when the host is not drained",
}

KEY = {
    "name": "key",
    "in": "query",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "The affinity key (a room, a user, a game; compared without case). On a "
    "keyed farm the same key gets the same host while the farm does not change; without it a "
    "farm keyed by client-subnet keys by the caller's /24 or /56, others use their policy",
}

SCHEMAS: dict[str, Any] = {
    "Assignment": obj(
        {
            "farm": STR,
            "key": {"type": ["string", "null"], "description": "The key used, if any"},
            "host": {"type": "string", "description": "The host's name in the farm"},
            "name": {"type": "string", "description": "Its per-host DNS name <host>.<farm>"},
            "a": STRINGS,
            "aaaa": STRINGS,
            "state": {"type": "string", "description": "up, or new/stale/down when failing open"},
            "how": {"type": "string", "enum": ["key", "policy"]},
            "reason": {"type": "string", "description": "Why this host, in a sentence"},
        },
        ["farm", "host", "name", "a", "aaaa", "how", "reason"],
    ),
    "Error": obj(
        {
            "error": {"type": "string", "description": "What is wrong, naming the field"},
            "status": INT,
            "field": {"type": "string", "description": "The field, parameter or path part"},
            "errors": {
                "type": "array",
                "items": ref("ZoneError"),
                "description": "Reload only: every problem found",
            },
        },
        ["error", "status"],
    ),
    "ZoneError": obj(
        {
            "file": STR,
            "where": {"type": ["string", "null"], "description": "`line N: path.in.file`"},
            "reason": STR,
            "message": STR,
        }
    ),
    "HostBody": obj(
        {
            "a": {"oneOf": [STR, STRINGS], "description": "IPv4 address(es)"},
            "aaaa": {"oneOf": [STR, STRINGS], "description": "IPv6 address(es)"},
            "capacity": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 1,
                "description": "In the units of the farm's score (by default the "
                "connections the host can take)",
            },
            "labels": LABELS,
        },
        description="At least one of a and aaaa. Replaces the host's addresses, capacity and "
        "labels.",
        additionalProperties=False,
    ),
    "DrainBody": obj(
        {"threshold": NUM, "grace": NUM},
        description="Optional; the same as the query parameters",
        additionalProperties=False,
    ),
    "SelectorBody": obj(
        {
            "selector": {"oneOf": [LABELS, STR]},
            "threshold": NUM,
            "grace": NUM,
            "force": BOOL,
        },
        additionalProperties=False,
    ),
    "Drain": obj(
        {
            "started": {"type": "number", "description": "Unix time the drain began"},
            "running_for": {"type": "number", "description": "Seconds"},
            "done": BOOL,
            "connections": {**NULLABLE_NUM, "description": "Last reported; null if none"},
            "threshold": NUM,
            "grace": NUM,
            "answers_expire_in": {
                "type": "number",
                "description": "Seconds until cached answers naming the host "
                "are gone (TTL + grace after the last answer)",
            },
            "waiting_for": {**STRINGS, "description": "Empty once drained"},
        }
    ),
    "Report": obj(
        {
            "farm": STR,
            "host": STR,
            "seq": {"type": "integer", "minimum": 0},
            "interval": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600, "default": 1},
            "healthy": {"type": "boolean", "default": True},
            "metrics": {
                "type": "object",
                "additionalProperties": {"type": "number", "minimum": 0},
                "maxProperties": 32,
            },
        },
        ["farm", "host", "seq"],
        additionalProperties=False,
    ),
    "ReportReply": obj(
        {
            "farm": STR,
            "host": STR,
            "applied": BOOL,
            "ignored": {"type": "string", "description": "Why a report was not applied"},
            "state": STR,
            "score": NUM,
            "advice": {
                "oneOf": [{"type": "null"}, obj({"shed": INT, "reason": STR})],
                "description": "Connections to shed; only with `advice: true` in the config",
            },
        }
    ),
    "Host": obj(
        {
            "name": STR,
            "a": STRINGS,
            "aaaa": STRINGS,
            "capacity": NUM,
            "labels": LABELS,
            "source": {"type": "string", "enum": ["zone", "api", "registered"]},
            "state": {
                "type": "string",
                "enum": ["up", "new", "stale", "down", "draining", "drained", "disabled"],
            },
            "admin": {"type": "string", "enum": ["enabled", "draining", "disabled"]},
            "score": NULLABLE_NUM,
            "report_age": {**NULLABLE_NUM, "description": "Seconds since the last report"},
            "report": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            "answers": INT,
            "last_answered": NULLABLE_NUM,
            "drain": {"oneOf": [{"type": "null"}, ref("Drain")]},
        }
    ),
    "HostDetail": {
        "allOf": [
            ref("Host"),
            obj(
                {
                    "reason": {
                        "type": ["string", "null"],
                        "enum": ["admin", "agent", "check", None],
                        "description": "Why the host is in its state (null: up on its agent)",
                    },
                    "check": {"oneOf": [{"type": "null"}, ref("HostCheck")]},
                }
            ),
        ]
    },
    "HostCheck": obj(
        {
            "type": {"type": "string", "enum": ["tcp", "http", "https", "tls"]},
            "verdict": {
                "type": "string",
                "enum": ["up", "down", "unknown"],
                "description": "All probing servers together (quorum)",
            },
            "verdict_here": {"type": "string", "enum": ["up", "down", "unknown"]},
            "servers": {**INT, "description": "Servers with a verdict (this one included)"},
            "down": {**INT, "description": "Of those, how many see the host down"},
            "quorum": {"oneOf": [INT, {"type": "string", "enum": ["majority"]}]},
            "require": {"type": "string", "enum": ["both", "agent", "check"]},
            "settings": {"type": "object", "description": "The check as the zone file sets it"},
            "here": {
                "type": "object",
                "description": "This server's probes: state, and per address last_ok, latency, "
                "error, successes, failures, at, changed_at, probes",
            },
            "peers": {
                "type": "object",
                "additionalProperties": {"type": "object"},
                "description": "The other servers' probes by server id, as 'here'",
            },
        }
    ),
    "Scale": obj(
        {
            "hosts": INT,
            "up": INT,
            "load": {"type": "number", "description": "Sum of weighted metrics, fresh reports"},
            "capacity": {"type": "number", "description": "Sum of capacity of hosts up"},
            "utilisation": {**NULLABLE_NUM, "description": "load / capacity"},
            "target": {"type": "number", "description": "Config scale_target"},
            "hosts_needed": {"type": ["integer", "null"]},
            "change": {"type": ["integer", "null"], "description": "hosts_needed - up"},
        }
    ),
    "FarmSummary": obj(
        {
            "name": STR,
            "zone": STR,
            "ttl": INT,
            "policy": STR,
            "answers": INT,
            "score": {"type": "object", "additionalProperties": NUM},
            "all_unhealthy": STR,
            "key": {
                "type": "string",
                "enum": ["label", "client-subnet"],
                "description": "consistent-hash farms: what the key is",
            },
            "balance_factor": {"type": "number", "description": "consistent-hash farms: c"},
            "redirect": obj(
                {"url": STR, "public": BOOL}, description="the URL template of GET /r/{farm}/..."
            ),
            "states": {"type": "object", "additionalProperties": INT},
            "scale": ref("Scale"),
        }
    ),
    "Farm": {
        "allOf": [ref("FarmSummary"), obj({"hosts": {"type": "array", "items": ref("Host")}})]
    },
}


def action_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    text = {
        "drain": "Drain: no new answers; the state turns `drained` once reported connections "
        "are at or below `threshold` and TTL + `grace` has passed since the last answer",
        "enable": "Enable: answer the host again (ends a drain or a disable)",
        "disable": "Disable: no new answers at once (register tokens may not)",
    }
    for action, summary in text.items():
        params = [FARM, HOST] + ([THRESHOLD, GRACE] if action == "drain" else [])
        op: dict[str, Any] = {
            "tags": ["admin"],
            "summary": summary,
            "parameters": params,
            "responses": {"200": ok(ref("HostDetail")), **errors(400, 401, 403, 404, 503)},
        }
        if action == "drain":
            op["requestBody"] = {"required": False, **json_body(ref("DrainBody"))}
        paths[f"/v1/farms/{{farm}}/hosts/{{host}}/{action}"] = {"post": op}
    for action in ("drain", "enable", "disable", "remove"):
        params = [FARM, SELECTOR]
        if action == "drain":
            params += [THRESHOLD, GRACE]
        if action == "remove":
            params += [FORCE]
        hosts = {"type": "array", "items": ref("Host")}
        reply = (
            obj({"farm": STR, "removed": STRINGS})
            if action == "remove"
            else obj({"farm": STR, "hosts": hosts})
        )
        paths[f"/v1/farms/{{farm}}/hosts:{action}"] = {
            "post": {
                "tags": ["admin"],
                "summary": f"{action.capitalize()} every host whose labels match the selector "
                "(all checked first: one refusal changes nothing)",
                "parameters": params,
                "requestBody": {"required": False, **json_body(ref("SelectorBody"))},
                "responses": {"200": ok(reply), **errors(400, 401, 403, 404, 409, 503)},
            }
        }
    return paths


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v1/health": {
            "get": {
                "tags": ["status"],
                "summary": "Liveness: zones loaded and the store's state (no token needed)",
                "security": [],
                "responses": {
                    "200": ok(obj({"status": STR, "zones": INT, "store": {"type": "object"}}))
                },
            }
        },
        "/v1/status": {
            "get": {
                "tags": ["status"],
                "summary": "Everything the status page shows: zones, farms, hosts, history",
                "parameters": [
                    {
                        "name": "history",
                        "in": "query",
                        "schema": INT,
                        "description": "Points of history per farm (max 3600)",
                    }
                ],
                "responses": {"200": ok({"type": "object"}), **errors(401, 403)},
            }
        },
        "/": {
            "get": {
                "tags": ["status"],
                "summary": "The status page (HTML)",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        },
        "/static/{file}": {
            "get": {
                "tags": ["status"],
                "summary": "Files of the status page",
                "parameters": [{"name": "file", "in": "path", "required": True, "schema": STR}],
                "responses": {"200": {"description": "The file"}, **errors(404)},
            }
        },
        "/metrics": {
            "get": {
                "tags": ["status"],
                "summary": "Prometheus metrics: the text exposition format, or OpenMetrics when "
                "the Accept header asks for application/openmetrics-text",
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {}, "application/openmetrics-text": {}},
                    }
                },
            }
        },
        "/v1/report": {
            "post": {
                "tags": ["ingest"],
                "summary": "One host's report (role report; a host-scoped token reports for "
                "its host only)",
                "requestBody": {"required": True, **json_body(ref("Report"))},
                "responses": {
                    "200": ok(ref("ReportReply")),
                    **errors(400, 401, 403, 404, 413, 503),
                },
            }
        },
        "/v1/reports": {
            "post": {
                "tags": ["ingest"],
                "summary": "A batch of reports; unknown farms or hosts are per-item results",
                "requestBody": {
                    "required": True,
                    **json_body(
                        obj(
                            {
                                "reports": {
                                    "type": "array",
                                    "items": ref("Report"),
                                    "maxItems": 1000,
                                }
                            },
                            ["reports"],
                        )
                    ),
                },
                "responses": {
                    "200": ok(
                        obj(
                            {
                                "applied": INT,
                                "results": {"type": "array", "items": ref("ReportReply")},
                            }
                        )
                    ),
                    **errors(400, 401, 403, 413, 503),
                },
            }
        },
        "/v1/farms/{farm}/explain": {
            "get": {
                "tags": ["status"],
                "summary": "Why the farm answers what it answers: states, scores, in-flight "
                "load, answer shares, the last choice",
                "parameters": [FARM],
                "responses": {"200": ok({"type": "object"}), **errors(401, 403, 404)},
            }
        },
        "/v1/farms/{farm}/assign": {
            "get": {
                "tags": ["assign"],
                "summary": "A host for one new connection, charged as exactly one connection "
                "(roles assign, read; rate-limited per client address)",
                "parameters": [FARM, KEY],
                "responses": {
                    "200": ok(ref("Assignment")),
                    **errors(400, 401, 403, 404, 429, 503),
                },
            }
        },
        "/r/{farm}/{path}": {
            "get": {
                "tags": ["assign"],
                "summary": "Redirect to the farm's redirect URL template filled in with an "
                "assigned host; the query string is passed on (roles assign, read, or none "
                "when the farm's redirect is public; rate-limited)",
                "security": [{"bearer": []}, {}],
                "parameters": [
                    FARM,
                    {
                        "name": "path",
                        "in": "path",
                        "required": True,
                        "schema": STR,
                        "description": "The rest of the path, put in the template's {path}",
                    },
                    KEY,
                ],
                "responses": {
                    "307": {
                        "description": "Location: the template with {host}, {farm}, {path}",
                        "headers": {"Location": {"schema": STR}},
                    },
                    **errors(400, 401, 403, 404, 429, 503),
                },
            }
        },
        "/v1/zones": {
            "get": {
                "tags": ["admin"],
                "summary": "The zones served (roles admin, read, register)",
                "responses": {
                    "200": ok(
                        obj(
                            {
                                "zones": {
                                    "type": "array",
                                    "items": obj(
                                        {
                                            "origin": STR,
                                            "source": STR,
                                            "serial": INT,
                                            "ttl": INT,
                                            "farms": STRINGS,
                                            "digest": STR,
                                        }
                                    ),
                                }
                            }
                        )
                    ),
                    **errors(401, 403),
                },
            }
        },
        "/v1/farms": {
            "get": {
                "tags": ["admin"],
                "summary": "Every farm the token may see, with host states, utilisation and "
                "scale advice",
                "responses": {
                    "200": ok(obj({"farms": {"type": "array", "items": ref("FarmSummary")}})),
                    **errors(401, 403),
                },
            }
        },
        "/v1/farms/{farm}": {
            "get": {
                "tags": ["admin"],
                "summary": "One farm with its hosts",
                "parameters": [FARM],
                "responses": {"200": ok(ref("Farm")), **errors(401, 403, 404)},
            }
        },
        "/v1/farms/{farm}/hosts/{host}": {
            "get": {
                "tags": ["admin"],
                "summary": "One host, with its drain progress and health checks",
                "parameters": [FARM, HOST],
                "responses": {"200": ok(ref("HostDetail")), **errors(401, 403, 404)},
            },
            "put": {
                "tags": ["admin"],
                "summary": "Add a host or replace its addresses, capacity and labels; a "
                "register token's addresses must lie in its networks",
                "parameters": [FARM, HOST],
                "requestBody": {"required": True, **json_body(ref("HostBody"))},
                "responses": {
                    "200": ok(ref("Host"), "Changed"),
                    "201": ok(ref("Host"), "Added"),
                    **errors(400, 401, 403, 404, 503),
                },
            },
            "delete": {
                "tags": ["admin"],
                "summary": "Remove a drained host (any host with force=true)",
                "parameters": [FARM, HOST, FORCE],
                "responses": {
                    "200": ok(obj({"farm": STR, "removed": STRINGS})),
                    **errors(401, 403, 404, 409, 503),
                },
            },
        },
        **action_paths(),
        "/v1/reload": {
            "post": {
                "tags": ["admin"],
                "summary": "Re-read every zone file; swap them in only if all are valid",
                "responses": {
                    "200": ok(
                        obj(
                            {
                                "zones": {
                                    "type": "object",
                                    "additionalProperties": obj({"serial": INT, "source": STR}),
                                },
                                "changed": STRINGS,
                            }
                        )
                    ),
                    **errors(401, 403, 422),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "tags": ["admin"],
                "summary": "This document",
                "security": [],
                "responses": {"200": ok({"type": "object"})},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lbdns HTTP API",
            "version": "1",
            "description": "Reports in (ingest), hosts and farms (admin), status and metrics. "
            "Errors are JSON `{error, status, field}`. Auth: `Authorization: Bearer <token>` "
            "with roles admin, read, report, register and assign (docs/api.md); with no token "
            "configured only loopback clients are served, as admin.",
        },
        "servers": [{"url": "http://127.0.0.1:8053"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "admin", "description": "Zones, farms and hosts (docs/api.md)"},
            {"name": "ingest", "description": "Reports from agents"},
            {"name": "status", "description": "Health, status page, metrics, explain"},
            {"name": "assign", "description": "The assignment API and its redirect"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
    }


def render() -> str:
    return json.dumps(document(), indent=1) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
