"""Log lines: one per event; JSON lines parse and carry the fields; text stays readable."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys

from support import EXAMPLE_ZONES, LbdnsProcess, wait_for

from lbdns.logs import JsonFormatter, TextFormatter

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) \S+: ")


def test_json_log_lines_parse(tmp_path):
    zones = tmp_path / "zones"
    shutil.copytree(EXAMPLE_ZONES, zones)
    config = tmp_path / "lbdns.yaml"
    config.write_text("query_log: 1.0\n")
    server = LbdnsProcess(tmp_path, zones=zones, config=config, extra=("--log-format", "json"))
    with server:
        server.query("chat.example.test.", "A")
        (zones / "broken.yaml").write_text("zone: broken.test.\nsoa: 3\n")
        server.send_signal(signal.SIGHUP)  # a failed reload logs a multi-line error
        wait_for(lambda: "reload failed" in server.log())
    lines = server.log().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    for event in events:
        assert set(event) >= {"time", "level", "logger", "message"}
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", event["time"])
    messages = [e["message"] for e in events]
    assert any(m.startswith("ready dns=") for m in messages)
    assert any(m == "stopped" for m in messages)
    failed = next(e for e in events if "reload failed" in e["message"])
    assert failed["level"] == "error" and "broken.yaml" in failed["message"]
    query = next(e for e in events if e["logger"] == "lbdns.query")
    assert query["qname"] == "chat.example.test." and query["client"] == "127.0.0.1"
    ready = next(e for e in events if e.get("event") == "ready")
    assert ready["state"] == "memory" and ready["dns"].startswith("127.0.0.1:")
    assert failed["event"] == "reload" and failed["result"] == "error" and failed["errors"] >= 1


def test_text_log_lines_are_one_per_event(lbdns):
    lbdns.query("chat.example.test.", "A")
    lbdns.stop()
    lines = lbdns.log().splitlines()
    assert lines and all(TEXT_LINE.match(line) for line in lines), lines
    ready = next(line for line in lines if " ready " in line)
    assert ready.endswith("state=memory workers=1")  # fields the message shows: not repeated


def test_more_lines_of_an_event_are_indented():
    record = _record("reload failed:\nzones/a.yaml: soa: bad\nzones/b.yaml: ttl: bad", {"n": 2})
    first, *rest = TextFormatter().format(record).splitlines()
    assert TEXT_LINE.match(first) and first.endswith("reload failed: n=2")
    assert rest == ["    zones/a.yaml: soa: bad", "    zones/b.yaml: ttl: bad"]


def _record(message: str, fields: dict | None = None, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("lbdns.test", logging.WARNING, __file__, 1, message, (), exc_info)
    if fields is not None:
        record.fields = fields
    return record


def test_fields_in_both_formats():
    fields = {"client": "127.0.0.1", "reason": "least-load among 3", "message": "x", "n": 2}
    text = TextFormatter().format(_record("query", fields))
    assert TEXT_LINE.match(text)
    assert text.endswith(
        'lbdns.test: query client=127.0.0.1 reason="least-load among 3" message=x n=2'
    )
    line = json.loads(JsonFormatter().format(_record("query", fields)))
    assert line["message"] == "query"  # a field may not replace the message ...
    assert line["field_message"] == "x"  # ... it is kept under another key
    assert line["reason"] == "least-load among 3" and line["n"] == 2
    shown = TextFormatter().format(_record("change by ops: drain web1", {"token": "ops"}))
    assert shown.endswith("change by ops: drain web1")


def test_a_traceback_stays_inside_its_json_line():
    text = JsonFormatter().format(_record("failed", exc=True))
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exception"]
    human = TextFormatter().format(_record("failed", exc=True))
    first, *rest = human.splitlines()
    assert TEXT_LINE.match(first) and rest and all(r.startswith("    ") for r in rest)


WRITERS = """
import logging, os, sys
from lbdns import logs
logs.setup("json")
children = []
for _ in range(3):  # four processes on one standard error
    pid = os.fork()
    if pid == 0:
        children = []
        break
    children.append(pid)
for i in range(200):
    logging.getLogger("lbdns.query").info("x" * (1000 + 37 * i), extra={"fields": {"n": i}})
for child in children:
    os.waitpid(child, 0)
"""


def test_processes_sharing_standard_error_never_split_a_line(tmp_path):
    # The DNS workers share the main process's standard error; each line, however long, must
    # land whole in the file (opened without O_APPEND here: the processes share its offset).
    path = tmp_path / "shared.log"
    with open(path, "wb") as target:
        subprocess.run([sys.executable, "-c", WRITERS], stderr=target, check=True, timeout=60)
    lines = path.read_text().splitlines()
    assert len(lines) == 4 * 200
    for line in lines:
        record = json.loads(line)  # a line cut by another's write would not parse
        assert len(record["message"]) == 1000 + 37 * record["n"]
