"""Reports in over real HTTP, answers out over real DNS.

A ``lbdns serve`` subprocess for validation and auth; an in-process ``Server`` on port 0 with a
fake clock and a seeded random source where the test needs time to pass on command.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import dns.asyncquery
import dns.message
import pytest
from support import EXAMPLE_ZONES, LbdnsProcess, http_json

from lbdns.config import Config
from lbdns.registry import Registry
from lbdns.server import Server
from lbdns.testing.clock import Clock

FARM = "chat.example.test."


def post(url: str, body, token: str | None = None, raw: bytes | None = None):
    return http_json(url, body, token, "POST", raw)


def get(url: str, token: str | None = None):
    return http_json(url, token=token)


def good(**changes):
    report = {
        "farm": FARM,
        "host": "web1",
        "seq": 1,
        "interval": 1.0,
        "healthy": True,
        "metrics": {"connections": 10, "cpu": 0.5},
    }
    report.update(changes)
    return report


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LbdnsProcess(tmp_path_factory.mktemp("ingest")) as process:
        yield process


def addresses(process: LbdnsProcess, name: str = FARM, rdtype: str = "A") -> list[str]:
    response = process.query(name, rdtype)
    return [item.address for rrset in response.answer for item in rrset]


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        (good(metrics={"connections": -1}), 400, "metrics.connections", "non-negative number"),
        (good(metrics={"connections": "7"}), 400, "metrics.connections", "non-negative number"),
        (good(metrics={"connections": True}), 400, "metrics.connections", "non-negative"),
        (good(metrics={"Conn Count": 1}), 400, "metrics.Conn Count", "metric names"),
        (good(metrics=[1, 2]), 400, "metrics", "object of metric name"),
        (good(seq=-1), 400, "seq", "non-negative integer"),
        (good(seq=1.5), 400, "seq", "non-negative integer"),
        (good(interval=0), 400, "interval", "seconds above 0"),
        (good(interval="1s"), 400, "interval", "seconds above 0"),
        (good(healthy="yes"), 400, "healthy", "true or false"),
        (good(farm=""), 400, "farm", "non-empty string"),
        (good(host=None), 400, "host", "non-empty string"),
        (good(load=3), 400, "load", "not a report field"),
        ([good()], 400, None, "JSON object"),
        (good(farm="nope.example.test."), 404, "farm", "no farm named"),
        (good(host="web9"), 404, "host", "no host named 'web9'"),
    ],
)
def test_bad_reports_name_the_field(server, body, status, field, message):
    code, reply = post(f"{server.http_url}/v1/report", body)
    assert code == status, reply
    assert message in reply["error"]
    assert reply.get("field") == field


def test_body_that_is_not_json(server):
    code, reply = post(f"{server.http_url}/v1/report", None, raw=b"{nope")
    assert code == 400 and "not valid JSON" in reply["error"]


def test_body_size_is_limited(server):
    big = good(metrics={"connections": 1}, host="web1" + " " * 70_000)
    code, reply = post(f"{server.http_url}/v1/report", big)
    assert code == 413 and "more than" in reply["error"]


# -- applying ----------------------------------------------------------------------------------


def test_report_reply_tells_the_state_and_old_seq_is_ignored(server):
    url = f"{server.http_url}/v1/report"
    code, reply = post(url, good(host="web3", seq=100, metrics={"connections": 4}))
    assert code == 200
    assert reply == {
        "farm": FARM,
        "host": "web3",
        "applied": True,
        "state": "up",
        "score": 2.0,  # 4 connections / capacity 2
        "advice": None,
    }
    code, reply = post(url, good(host="web3", seq=99, metrics={"connections": 400}))
    assert code == 200 and reply["applied"] is False
    assert "seq 99 is not newer than the last accepted seq 100" in reply["ignored"]
    assert reply["score"] == 2.0  # the old report was not applied
    code, reply = post(url, good(host="web3", seq=101, healthy=False))
    assert reply["applied"] and reply["state"] == "down"


def test_batch_applies_each_and_reports_unknown_hosts_per_item(server):
    body = {
        "reports": [
            good(host="web1", seq=500, metrics={"connections": 1}),
            good(host="web404", seq=1),
            good(host="web2", seq=500, metrics={"connections": 1}),
        ]
    }
    code, reply = post(f"{server.http_url}/v1/reports", body)
    assert code == 200
    assert reply["applied"] == 2
    assert [r["applied"] for r in reply["results"]] == [True, False, True]
    assert reply["results"][1]["status"] == 404
    assert "no host named 'web404'" in reply["results"][1]["error"]


def test_batch_with_a_bad_item_names_it_and_applies_nothing(server):
    body = {"reports": [good(seq=900), good(seq=900, metrics={"connections": -5})]}
    code, reply = post(f"{server.http_url}/v1/reports", body)
    assert code == 400
    assert reply["field"] == "reports[1].metrics.connections"
    assert "reports[1].metrics.connections must be a non-negative number" in reply["error"]
    code, reply = post(f"{server.http_url}/v1/reports", {"reports": {}})
    assert code == 400 and reply["field"] == "reports"
    code, reply = post(f"{server.http_url}/v1/reports", [good()])
    assert code == 400 and reply["field"] == "reports"


def test_reports_steer_dns_answers_and_explain_shows_why(tmp_path):
    with LbdnsProcess(tmp_path) as process:
        # Nothing reported yet: the never-reported hosts are answered (fail-open).
        assert addresses(process)[0] in {"192.0.2.10", "192.0.2.11", "192.0.2.12"}
        batch = [
            good(host="web1", seq=1, metrics={"connections": 500}),
            good(host="web2", seq=1, metrics={"connections": 10}),  # 5 per capacity unit
            good(host="web3", seq=1, metrics={"connections": 900}),
        ]
        code, _ = post(f"{process.http_url}/v1/reports", {"reports": batch})
        assert code == 200
        assert {addresses(process)[0] for _ in range(5)} == {"192.0.2.11"}
        assert addresses(process, rdtype="AAAA") == ["2001:db8::11"]
        code, info = get(f"{process.http_url}/v1/farms/chat.example.test/explain")
        assert code == 200
        hosts = {h["host"]: h for h in info["hosts"]}
        assert hosts["web2"]["state"] == "up" and hosts["web2"]["score"] == 5.0
        # Most recent answers (all but the one before the reports) named web2.
        assert hosts["web2"]["in_flight"] > 0 and hosts["web2"]["share_recent"] >= 0.8
        assert hosts["web1"]["report_age"] < 5
        assert info["last_answer"]["chosen"] == ["web2"]
        # The AAAA came right after the A from the same address: same host, not charged twice.
        assert info["last_answer"]["qtype"] == "AAAA"
        assert "same resolver asked a moment ago" in info["last_answer"]["reason"]
        code, reply = get(f"{process.http_url}/v1/farms/nope.test/explain")
        assert code == 404


# -- auth --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guarded")
    config = tmp / "lbdns.yaml"
    config.write_text(
        "tokens:\n"
        "  - {name: ops, secret: ops-secret-1, role: admin}\n"
        "  - {name: viewer, secret: viewer-secret-1, role: read}\n"
        f"  - {{name: agents, secret: agents-secret, role: report, farms: [{FARM}]}}\n"
        f"  - {{name: web1, secret: web1-secret-1, role: report, farms: [{FARM}], host: web1}}\n"
        "  - {name: other, secret: other-secret-1, role: report, farms: [x.example.test.]}\n"
    )
    with LbdnsProcess(tmp, config=config) as process:
        yield process


@pytest.mark.parametrize(
    ("token", "body", "status", "message"),
    [
        (None, good(), 401, "missing bearer token"),
        ("wrong-secret-9", good(), 401, "unknown token"),
        ("viewer-secret-1", good(), 403, "may not do this"),
        ("web1-secret-1", good(host="web2"), 403, "may report for host web1 only"),
        ("other-secret-1", good(), 403, "may report for its farms only"),
        ("web1-secret-1", good(host="web1"), 200, None),
        ("agents-secret", good(host="web2"), 200, None),
        ("ops-secret-1", good(host="web3"), 200, None),
    ],
)
def test_report_auth(guarded, token, body, status, message):
    code, reply = post(f"{guarded.http_url}/v1/report", body, token=token)
    assert code == status, reply
    if message:
        assert message in reply["error"]


def test_a_host_token_cannot_slip_another_host_into_a_batch(guarded):
    body = {"reports": [good(host="web1", seq=50), good(host="web2", seq=50)]}
    code, reply = post(f"{guarded.http_url}/v1/reports", body, token="web1-secret-1")
    assert code == 403 and "reports[1]" in reply["error"]


def test_explain_needs_a_read_token(guarded):
    url = f"{guarded.http_url}/v1/farms/{FARM}/explain"
    assert get(url)[0] == 401
    assert get(url, token="web1-secret-1")[0] == 403
    code, info = get(url, token="viewer-secret-1")
    assert code == 200 and info["farm"] == FARM


# -- in-process, with a fake clock -------------------------------------------------------------


async def _in_process(tmp_path: Path) -> None:
    import aiohttp

    clock = Clock()
    registry = Registry(clock=clock, rng=random.Random(3))
    config = Config(zones=EXAMPLE_ZONES, dns=(("127.0.0.1", 0),), http=("127.0.0.1", 0), workers=1)
    server = Server(config, registry)
    await server.start()
    try:
        host, port = server.dns_addresses[0]
        http = "http://{}:{}".format(*server.http_address)

        async def ask(source: str) -> list[str]:
            query = dns.message.make_query(FARM, "A")
            response = await dns.asyncquery.udp(query, host, port=port, source=source, timeout=3)
            return [item.address for rrset in response.answer for item in rrset]

        async with aiohttp.ClientSession() as session:

            async def send(loads: dict[str, int], seq: int, **kw) -> dict:
                reports = [
                    good(host=h, seq=seq, metrics={"connections": n}, **kw)
                    for h, n in loads.items()
                ]
                async with session.post(f"{http}/v1/reports", json={"reports": reports}) as r:
                    assert r.status == 200
                    return await r.json()

            await send({"web1": 100, "web2": 200, "web3": 200}, 1)
            # Equal load per capacity: answers between reports spread by capacity, the
            # accounting counting each one (herd 1 for a resolver seen for the first time).
            seen = [tuple(await ask(f"127.0.0.{i}")) for i in range(2, 52)]
            counts = {a: seen.count((a,)) for a in ("192.0.2.10", "192.0.2.11", "192.0.2.12")}
            assert counts["192.0.2.10"] == pytest.approx(10, abs=2), counts
            assert counts["192.0.2.11"] == pytest.approx(20, abs=2), counts
            # web1 stops reporting: stale after 2 intervals, then never answered.
            clock.now += 2.5
            reply = await send({"web2": 200, "web3": 200}, 2)
            assert {r["state"] for r in reply["results"]} == {"up"}
            answers = {tuple(await ask(f"127.0.0.{i}")) for i in range(60, 80)}
            assert ("192.0.2.10",) not in answers
            async with session.get(f"{http}/v1/farms/{FARM}/explain") as r:
                info = await r.json()
            states = {h["host"]: h["state"] for h in info["hosts"]}
            assert states == {"web1": "stale", "web2": "up", "web3": "up"}
            # Every host down: fail-open answers the least-bad (stale web1 first).
            await send({"web2": 1, "web3": 1}, 3, healthy=False)
            assert await ask("127.0.0.90") == ["192.0.2.10"]
    finally:
        await server.close()


def test_in_process_states_accounting_and_fail_open(tmp_path):
    asyncio.run(asyncio.wait_for(_in_process(tmp_path), 20))


def test_advice_in_the_reply_when_configured(tmp_path):
    config = tmp_path / "lbdns.yaml"
    config.write_text("advice: true\n")
    with LbdnsProcess(tmp_path, config=config) as process:
        batch = [
            good(host="web2", seq=1, metrics={"connections": 20}),
            good(host="web3", seq=1, metrics={"connections": 20}),
            good(host="web1", seq=1, metrics={"connections": 300}),
        ]
        code, reply = post(f"{process.http_url}/v1/reports", {"reports": batch})
        assert code == 200
        advice = reply["results"][2]["advice"]
        assert advice is not None and advice["shed"] > 0
        assert reply["results"][1]["advice"] is None
