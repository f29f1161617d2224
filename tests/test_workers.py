"""Several DNS worker processes (config ``workers``): every worker answers, and every change
reaches every worker.

Black-box: ``lbdns serve`` with ``workers: 3`` and ``explain_queries: true``; the CH TXT
explanation names the worker that answered ("worker I of 3 pid P") and shows that worker's own
view of the farm, so each assertion reads what each process holds. dnspython sends every query
from a new socket, so the kernel's SO_REUSEPORT hash spreads them over the workers.
"""

from __future__ import annotations

import os
import re
import shutil
import signal

import dns.message
import dns.query
import pytest
from redis_support import RedisProcess, redis_available
from support import EXAMPLE_ZONES, LbdnsProcess, http_json, http_request, wait_for

from lbdns import config as config_module
from lbdns.errors import ConfigErrors

FARM = "chat.example.test."
WORKERS = 3
WORKER = re.compile(r"^worker (\d+) of (\d+) pid (\d+)$")


def views(process: LbdnsProcess, tries: int = 300) -> dict[int, list[str]]:
    """The explanation TXT lines of each worker, by worker id, from up to ``tries`` queries
    (stops once every worker has answered)."""
    seen: dict[int, list[str]] = {}
    query = dns.message.make_query(f"_lbdns.{FARM}", "TXT", rdclass="CH")
    for _ in range(tries):
        response = dns.query.udp(query, process.host, port=process.port, timeout=3)
        lines = [b"".join(r.strings).decode() for rrset in response.answer for r in rrset]
        match = WORKER.match(lines[-1])
        assert match, lines
        seen[int(match.group(1))] = lines
        if len(seen) == WORKERS:
            break
    return seen


def every_worker(process: LbdnsProcess, check, what: str) -> dict[int, list[str]]:
    """Wait until ``check(lines)`` holds in the view of every worker (bounded)."""

    def all_hold():
        seen = views(process)
        return seen if len(seen) == WORKERS and all(check(v) for v in seen.values()) else None

    return wait_for(all_hold, timeout=10, step=0.05, what=what)


def host_line(lines: list[str], host: str) -> str:
    return next(line for line in lines if line.startswith(f"{host} "))


def ask_from_many(process: LbdnsProcess, count: int, first: int = 10) -> int:
    """``count`` A queries for the farm, each from its own loopback address (a first-seen
    resolver each: a herd of 1, charged and exchanged) and its own socket; how many answered."""
    answered = 0
    for i in range(first, first + count):
        query = dns.message.make_query(FARM, "A")
        source = f"127.0.{i // 250}.{i % 250 + 2}"
        response = dns.query.udp(query, process.host, port=process.port, timeout=3, source=source)
        answered += bool(response.answer)
    return answered


def inflight(lines: list[str]) -> float:
    return sum(float(v) for v in re.findall(r"inflight=([\d.]+)", " ".join(lines)))


def metric(process: LbdnsProcess, name: str) -> dict[str, float]:
    _, body, _ = http_request(f"{process.http_url}/metrics")
    out = {}
    for line in body.decode().splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match:
            out[match.group(1) or ""] = float(match.group(2))
    return out


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    zones = tmp / "zones"
    shutil.copytree(EXAMPLE_ZONES, zones)
    config = tmp / "lbdns.yaml"
    config.write_text(f"workers: {WORKERS}\nexplain_queries: true\n")
    with LbdnsProcess(tmp, zones=zones, config=config, extra=("--data-dir", str(tmp))) as process:
        process.zones = zones
        yield process


def test_every_worker_answers(workers):
    seen = views(workers)
    assert sorted(seen) == list(range(WORKERS))
    pids = {int(WORKER.match(lines[-1]).group(3)) for lines in seen.values()}
    assert len(pids) == WORKERS  # three processes
    counted = wait_for(
        lambda: (
            (m := metric(workers, "lbdns_dns_worker_queries_total"))
            and len(m) == WORKERS
            and all(v > 0 for v in m.values())
            and m
        ),
        what="every worker's queries in /metrics",
    )
    total = metric(workers, "lbdns_dns_queries_total")
    assert sum(total.values()) >= sum(counted.values())  # the sum over the workers
    status = http_json(f"{workers.http_url}/v1/status")[1]
    assert [w["worker"] for w in status["workers"]] == list(range(WORKERS))


def test_a_report_reaches_every_worker(workers):
    http_json(
        f"{workers.http_url}/v1/report",
        {"farm": FARM, "host": "web1", "seq": 1, "interval": 5, "metrics": {"connections": 7}},
    )
    every_worker(
        workers,
        lambda lines: host_line(lines, "web1").startswith("web1 up load=7 "),
        "the report in every worker",
    )


def test_answers_are_charged_farm_wide(workers):
    before = inflight(views(workers)[0])
    answered = ask_from_many(workers, 60)  # each from a new socket: all three workers answer
    # Every answer to a first-seen resolver charges one expected connection (its herd is the
    # mean, 1), whichever worker gave it; every worker and the main process see the sum.
    expected = before + answered
    every_worker(
        workers,
        lambda lines: abs(inflight(lines) - expected) < 0.5,
        f"in-flight {expected} in every worker",
    )
    explain = http_json(f"{workers.http_url}/v1/farms/{FARM}/explain")[1]
    assert sum(h["in_flight"] for h in explain["hosts"]) == pytest.approx(expected, abs=0.5)
    answers = sum(h["answers"] for h in explain["hosts"])
    assert answers >= answered  # the main process counts every worker's answers


def test_an_admin_change_reaches_every_worker(workers):
    status, _ = http_json(f"{workers.http_url}/v1/farms/{FARM}/hosts/web2/disable", {})
    assert status == 200
    every_worker(
        workers, lambda lines: " disabled " in host_line(lines, "web2"), "web2 disabled everywhere"
    )
    http_json(f"{workers.http_url}/v1/farms/{FARM}/hosts/web2/enable", {})
    every_worker(
        workers, lambda lines: " disabled " not in host_line(lines, "web2"), "web2 enabled again"
    )
    status, _ = http_json(f"{workers.http_url}/v1/farms/{FARM}/hosts/web2/drain", {"grace": 60})
    assert status == 200
    every_worker(
        workers, lambda lines: " draining " in host_line(lines, "web2"), "web2 draining everywhere"
    )
    http_json(f"{workers.http_url}/v1/farms/{FARM}/hosts/web2/enable", {})
    every_worker(
        workers,
        lambda lines: " up " in host_line(lines, "web2") or " new " in host_line(lines, "web2"),
        "web2 back",
    )


def test_a_reload_reaches_every_worker(workers):
    zone = workers.zones / "example.test.yaml"
    text = zone.read_text()
    zone.write_text(text.replace("    hosts:\n", "    hosts:\n      web9: {a: 192.0.2.19}\n", 1))
    try:
        status, _ = http_json(f"{workers.http_url}/v1/reload", {})
        assert status == 200
        every_worker(
            workers,
            lambda lines: any(line.startswith("web9 ") for line in lines),
            "web9 in every worker",
        )
    finally:
        zone.write_text(text)
        http_json(f"{workers.http_url}/v1/reload", {})


def test_a_worker_that_dies_is_started_again(workers):
    seen = views(workers)
    pid = int(WORKER.match(seen[1][-1]).group(3))
    os.kill(pid, signal.SIGKILL)  # a worker this test's server started
    wait_for(
        lambda: metric(workers, "lbdns_worker_restarts_total").get("") == 1.0,
        what="the restart counted",
    )
    assert re.search(rf"worker 1 \(pid {pid}\) exited with code -9", workers.log())
    again = every_worker(
        workers, lambda lines: host_line(lines, "web1").startswith("web1 "), "worker 1 back"
    )
    new_pid = int(WORKER.match(again[1][-1]).group(3))
    assert new_pid != pid


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workers: 0\n", "workers: must be auto or an integer from 1 to 256, got 0"),
        ("workers: two\n", "workers: must be auto or an integer from 1 to 256, got 'two'"),
        ("workers: 2.5\n", "workers: must be auto or an integer"),
    ],
)
def test_bad_workers_settings_are_refused(tmp_path, text, expected):
    path = tmp_path / "lbdns.yaml"
    path.write_text(text)
    with pytest.raises(ConfigErrors) as caught:
        config_module.load(path)
    assert expected in str(caught.value)


def test_one_worker_is_the_default_and_auto_is_one_per_cpu(tmp_path):
    assert config_module.load(None).workers == 1
    path = tmp_path / "lbdns.yaml"
    path.write_text("workers: auto\n")
    assert config_module.load(path).workers == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not redis_available(), reason="needs redis-server")
def test_with_redis_every_worker_is_a_server_of_the_cluster(tmp_path):
    with RedisProcess(tmp_path / "redis") as redis_server:
        config = tmp_path / "lbdns.yaml"
        config.write_text(f"workers: {WORKERS}\nexplain_queries: true\nstate: {redis_server.url}\n")
        with LbdnsProcess(tmp_path, config=config) as process:
            assert sorted(views(process)) == list(range(WORKERS))
            http_json(
                f"{process.http_url}/v1/report",
                {
                    "farm": FARM,
                    "host": "web3",
                    "seq": 1,
                    "interval": 5,
                    "metrics": {"connections": 5},
                },
            )
            every_worker(
                process,
                lambda lines: host_line(lines, "web3").startswith("web3 up load=2.5 "),
                "the report in every worker, through Redis",
            )
            before = inflight(views(process)[0])
            answered = ask_from_many(process, 30, first=100)
            every_worker(
                process,
                lambda lines: abs(inflight(lines) - before - answered) < 0.5,
                "every worker's charges in every worker, through Redis",
            )


def test_every_worker_makes_the_same_server_cookie(workers):
    # The cookie secret is the main process's (random unless configured), so a cookie one worker
    # made is good at every other: the same client cookie and address, the same second, the
    # same server cookie, whichever worker answers.
    import dns.edns

    client = bytes(range(8))
    by_second: dict[bytes, set[bytes]] = {}
    for _ in range(60):  # each from a new socket: all three workers answer
        query = dns.message.make_query(FARM, "A", use_edns=0)
        query.use_edns(0, options=[dns.edns.GenericOption(10, client)])
        response = dns.query.udp(query, workers.host, port=workers.port, timeout=3)
        cookie = next(o for o in response.options if o.otype == 10).to_wire()
        assert cookie[:8] == client
        by_second.setdefault(cookie[12:16], set()).add(cookie[8:])
    assert all(len(cookies) == 1 for cookies in by_second.values()), by_second
