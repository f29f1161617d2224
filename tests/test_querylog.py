"""The query log: off by default, sampled, bounded by query_log_rate, with the chosen host(s)."""

from __future__ import annotations

import json
import logging
import random
import time

import dns.message
import pytest
from obs_support import scrape, value
from support import EXAMPLE_ZONES, LbdnsProcess

from lbdns.config import Config
from lbdns.dnsserver.querylog import QueryLog
from lbdns.dnsserver.wire import Answerer
from lbdns.registry import Registry
from lbdns.server import Server
from lbdns.zone.parse import load_folder


def query_lines(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "lbdns.query"]


def test_query_log_lines_are_written_and_bounded_by_the_rate(tmp_path):
    config = tmp_path / "lbdns.yaml"
    config.write_text("query_log: 1.0\nquery_log_rate: 5\n")
    server = LbdnsProcess(tmp_path, config=config, extra=("--log-format", "json"))
    with server:
        started = time.monotonic()
        for _ in range(30):
            server.query("chat.example.test.", "A")
        server.query("nope.example.test.", "A")
        elapsed = time.monotonic() - started
        samples = scrape(server.http_url)
        written = value(samples, "lbdns_query_log_lines_total", result="written")
        suppressed = value(samples, "lbdns_query_log_lines_total", result="suppressed")
    lines = query_lines(server.log())
    assert len(lines) == written
    # A burst of one second's worth, then the rate: never more.
    assert 5 <= written <= 5 + 5 * elapsed + 1
    assert written + suppressed == 31
    first = lines[0]
    assert first["message"] == "query"
    assert first["client"] == "127.0.0.1"
    assert first["qname"] == "chat.example.test."
    assert first["qtype"] == "A"
    assert first["rcode"] == "NOERROR"
    assert first["farm"] == "chat.example.test."
    assert first["hosts"] in ("web1", "web2", "web3")
    assert first["hosts"] in first["reason"]
    assert "new" in first["reason"]  # no host reported yet: answered from the new hosts
    assert sum(line.get("suppressed", 0) for line in lines) <= suppressed


def test_query_log_is_off_by_default(lbdns):
    for _ in range(3):
        lbdns.query("chat.example.test.", "A")
    samples = scrape(lbdns.http_url)
    assert value(samples, "lbdns_query_log_lines_total", result="written") == 0
    assert "lbdns.query" not in lbdns.log()
    assert Server(Config()).answerer.query_log is None


def test_each_worker_logs_at_its_share_of_the_rate():
    config = Config(query_log=1.0, query_log_rate=100.0, workers=4)
    shares = [Server(config, worker=i).answerer.query_log for i in range(4)]
    assert [log.rate for log in shares] == [25.0] * 4  # together, the server's rate
    assert [log.worker for log in shares] == [0, 1, 2, 3]
    assert Server(Config(query_log=1.0, workers=1)).answerer.query_log.worker is None


def _answerer() -> Answerer:
    registry = Registry()
    registry.load_zones(load_folder(EXAMPLE_ZONES))
    return Answerer(registry)


def _wire(name: str, rdtype: str = "A") -> bytes:
    return dns.message.make_query(name, rdtype).to_wire()


def test_rate_limit_refills_with_the_clock(caplog):
    answerer = _answerer()
    now = [100.0]
    answerer.query_log = log = QueryLog(answerer, 1.0, 10, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="lbdns.query")
    for _ in range(50):
        assert answerer.respond(_wire("chat.example.test."), "127.0.0.9") is not None
    assert (log.written, log.suppressed) == (10, 40)
    now[0] += 0.5  # half a second: five more lines may go out
    for _ in range(20):
        answerer.respond(_wire("mail.example.test."), "127.0.0.9")
    assert (log.written, log.suppressed) == (15, 55)
    records = [r for r in caplog.records if r.name == "lbdns.query"]
    assert len(records) == 15
    assert records[10].fields["suppressed"] == 40  # the first line after the gap says so
    assert records[10].fields["qname"] == "mail.example.test."
    assert records[10].fields["reason"] == "static"


def test_sampling_fraction(caplog):
    answerer = _answerer()
    answerer.query_log = log = QueryLog(answerer, 0.25, 1e6, rng=random.Random(7))
    caplog.set_level(logging.INFO, logger="lbdns.query")
    for _ in range(400):
        answerer.respond(_wire("nope.example.test."), "127.0.0.9")
    assert 70 <= log.written <= 130
    assert log.suppressed == 0
    record = caplog.records[-1]
    assert record.fields["rcode"] == "NXDOMAIN"
    assert record.fields["reason"] == "nxdomain"


def test_query_log_flag_turns_it_on_and_a_bad_value_names_the_flag(tmp_path):
    extra = ("--log-format", "json", "--query-log", "1")
    with LbdnsProcess(tmp_path, extra=extra) as server:
        server.query("mail.example.test.", "A")
        deadline = time.monotonic() + 5
        while not query_lines(server.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = query_lines(server.log())
    assert lines and lines[0]["qname"] == "mail.example.test."
    with pytest.raises(RuntimeError, match="--query-log: must be between"):
        LbdnsProcess(tmp_path, extra=("--query-log", "2")).start()
