"""Several DNS worker processes (config ``workers``): every worker answers, and every change
reaches every worker.

Black-box: ``lbdns serve`` with ``workers: 3`` and ``explain_queries: true``; the CH TXT
explanation names the worker that answered ("worker I of 3 pid P") and shows that worker's own
view of the farm, so each assertion reads what each process holds. dnspython sends every query
from a new socket, so the kernel's SO_REUSEPORT hash spreads them over the workers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import pytest
from probe_support import zone_folder
from redis_support import RedisProcess, redis_available
from support import EXAMPLE_ZONES, LbdnsProcess, http_json, http_request, wait_for

from lbdns import config as config_module
from lbdns.errors import ConfigErrors
from lbdns.registry import Registry
from lbdns.testing.backend import Backend
from lbdns.workers import checks
from lbdns.zone.parse import load_folder

FARM = "chat.example.test."
WORKERS = 3
WORKER = re.compile(r"^worker (\d+) of (\d+) pid (\d+)$")


def views(
    process: LbdnsProcess, tries: int = 300, farm: str = FARM, workers: int = WORKERS
) -> dict[int, list[str]]:
    """The explanation TXT lines of each worker, by worker id, from up to ``tries`` queries
    (stops once every worker has answered)."""
    seen: dict[int, list[str]] = {}
    query = dns.message.make_query(f"_lbdns.{farm}", "TXT", rdclass="CH")
    for _ in range(tries):
        response = dns.query.udp(query, process.host, port=process.port, timeout=3)
        lines = [b"".join(r.strings).decode() for rrset in response.answer for r in rrset]
        match = WORKER.match(lines[-1])
        assert match, lines
        seen[int(match.group(1))] = lines
        if len(seen) == workers:
            break
    return seen


def every_worker(
    process: LbdnsProcess, check, what: str, farm: str = FARM, workers: int = WORKERS
) -> dict[int, list[str]]:
    """Wait until ``check(lines)`` holds in the view of every worker (bounded)."""

    def all_hold():
        seen = views(process, farm=farm, workers=workers)
        return seen if len(seen) == workers and all(check(v) for v in seen.values()) else None

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
    config.write_text("explain_queries: true\n")
    with LbdnsProcess(
        tmp, zones=zones, config=config, extra=("--data-dir", str(tmp)), workers=WORKERS
    ) as process:
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


def test_one_worker_per_cpu_is_the_default_and_the_command_line_overrides_it(tmp_path):
    cpus = min(len(os.sched_getaffinity(0)), 16)
    assert config_module.load(None).workers == cpus
    path = tmp_path / "lbdns.yaml"
    path.write_text("workers: auto\n")
    assert config_module.load(path).workers == cpus
    path.write_text("workers: 3\n")
    assert config_module.load(path).workers == 3
    assert config_module.load(path, {"workers": 1}).workers == 1
    with pytest.raises(ConfigErrors) as caught:
        config_module.load(None, {"workers": "many"})
    assert "--workers: must be auto or an integer from 1 to 256, got 'many'" in str(caught.value)


def test_a_default_start_serves_from_one_worker_per_cpu(tmp_path):
    # The quick start of the README, on free ports: no config, no workers setting.
    cpus = min(len(os.sched_getaffinity(0)), 16)
    with LbdnsProcess(tmp_path, workers=None) as process:
        if cpus > 1:
            assert f"DNS from {cpus} worker processes (one per usable CPU" in process.log()
        else:
            assert "DNS from one process" in process.log()
        assert f" workers={cpus}" in process.log()
        status = http_json(f"{process.http_url}/v1/status")[1]
        assert len(status["workers"]) == (cpus if cpus > 1 else 0)

        def every_worker_answered():
            answered = ask_from_many(process, 20)
            assert answered == 20  # every query gets its answer, whichever worker took it
            counts = metric(process, "lbdns_dns_worker_queries_total")
            return len(counts) == cpus and all(v > 0 for v in counts.values()) and counts

        counts = wait_for(every_worker_answered, timeout=15, what="a query in every worker")
        assert sorted(counts) == [f'{{worker="{i}"}}' for i in range(cpus)]


@pytest.mark.skipif(not redis_available(), reason="needs redis-server")
def test_with_redis_every_worker_is_a_server_of_the_cluster(tmp_path):
    with RedisProcess(tmp_path / "redis") as redis_server:
        config = tmp_path / "lbdns.yaml"
        config.write_text(f"explain_queries: true\nstate: {redis_server.url}\n")
        with LbdnsProcess(tmp_path, config=config, workers=WORKERS) as process:
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


# -- health checks: the main process probes, every worker answers its verdicts -----------------

CHECKED = "web.probe.test."
INTERVAL = 0.2  # seconds between two probes of an address


def check_words(lines: list[str], host: str) -> str:
    line = host_line(lines, host)
    return " ".join(w for w in line.split() if w.startswith(("check=", "down=", "reason=")))


def test_only_the_main_process_probes_and_every_worker_answers_its_verdicts(tmp_path):
    b1, b2 = Backend("127.0.0.11").start(), Backend("127.0.0.12").start()
    try:
        zones = zone_folder(
            tmp_path,
            f"""\
            check: {{type: tcp, port: {b1.port}, interval: {INTERVAL}, timeout: 0.2, fall: 2}}
            hosts:
              h1: {{a: 127.0.0.11}}
              h2: {{a: 127.0.0.12, check: {{port: {b2.port}}}}}
            """,
        )
        config = tmp_path / "lbdns.yaml"
        config.write_text("explain_queries: true\n")
        with LbdnsProcess(tmp_path, zones=zones, config=config, workers=2) as process:
            every_worker(
                process,
                lambda lines: all(
                    check_words(lines, h) == "check=up down=0/1" for h in ("h1", "h2")
                ),
                "both hosts up by their checks in every worker",
                farm=CHECKED,
                workers=2,
            )
            # One prober, not one per worker: over 3 s the backend sees about 3 / INTERVAL
            # connections (each interval stretched by up to 10 %), two probers would make twice
            # as many; and every one of them is counted in the main process's metrics.
            before, started = b1.accepted, time.monotonic()
            time.sleep(3.0)
            seen = b1.accepted - before
            expected = (time.monotonic() - started) / INTERVAL
            assert 0.7 * expected <= seen <= 1.3 * expected, (seen, expected)
            probes = metric(process, "lbdns_probes_total")
            h1 = sum(v for labels, v in probes.items() if 'host="h1"' in labels)
            assert b1.accepted - 2 <= h1 <= b1.accepted, (h1, b1.accepted)

            b1.stop()  # h1's application goes away: refused
            down = every_worker(
                process,
                lambda lines: check_words(lines, "h1") == "reason=check check=down down=1/1",
                "h1 down by its check in every worker",
                farm=CHECKED,
                workers=2,
            )
            assert all(host_line(v, "h1").startswith("h1 down ") for v in down.values())
            before = metric(process, "lbdns_dns_worker_queries_total")
            for _ in range(40):  # from new sockets: both workers answer
                reply = process.query(CHECKED)
                assert {rr.address for rrset in reply.answer for rr in rrset} == {"127.0.0.12"}
            wait_for(
                lambda: all(
                    v > before.get(k, 0)
                    for k, v in metric(process, "lbdns_dns_worker_queries_total").items()
                ),
                what="both workers answered the farm",
            )

            b1.start()  # the same port again
            every_worker(
                process,
                lambda lines: check_words(lines, "h1") == "check=up down=0/1",
                "h1 back in every worker",
                farm=CHECKED,
                workers=2,
            )
    finally:
        b1.stop()
        b2.stop()


@pytest.mark.skipif(not redis_available(), reason="needs redis-server")
def test_with_redis_each_server_votes_once_whatever_its_workers(tmp_path):
    # Two servers of two workers each; h1 refuses server B's probes (a firewall on B's path).
    # Each server is one vote in every worker of both (1 of 2 down: no majority, h1 stays up),
    # not one per worker, and the main process's vote reaching its workers both through Redis
    # and through the hub counts once.
    h1, h2 = Backend("127.0.0.11").start(), Backend("127.0.0.12").start()
    h1.deny.add("127.0.0.3")
    # An http check: the backend resets a denied connection only once it has accepted it, and
    # a tcp check may pass before that (the connect had completed).
    zones = zone_folder(
        tmp_path,
        f"""\
        check: {{type: http, port: {h1.port}, interval: {INTERVAL}, fall: 2}}
        hosts:
          h1: {{a: 127.0.0.11}}
          h2: {{a: 127.0.0.12, check: {{port: {h2.port}}}}}
        """,
    )
    config = tmp_path / "lbdns.yaml"
    config.write_text("explain_queries: true\n")
    try:
        with RedisProcess(tmp_path / "redis") as redis_server:
            servers = []
            for source in ("127.0.0.2", "127.0.0.3"):
                extra = ("--state", redis_server.url, "--check-source", source)
                servers.append(
                    LbdnsProcess(tmp_path, zones, config=config, extra=extra, workers=2).start()
                )
            try:
                for server in servers:
                    every_worker(
                        server,
                        lambda lines: (
                            check_words(lines, "h1") == "check=up down=1/2"
                            and check_words(lines, "h2") == "check=up down=0/2"
                        ),
                        "one vote per server in every worker",
                        farm=CHECKED,
                        workers=2,
                    )
            finally:
                for server in servers:
                    server.stop()
    finally:
        h1.stop()
        h2.stop()


def test_relayed_verdicts_replace_and_a_full_copy_drops_what_is_no_longer_probed(tmp_path):
    zones = zone_folder(
        tmp_path,
        """\
        check: {type: tcp, port: 9}
        hosts:
          h1: {a: 127.0.0.11}
          h2: {a: 127.0.0.12}
          h3: {a: 127.0.0.13, check: false}
        """,
    )
    registry = Registry()
    registry.load_zones(load_folder(zones))
    farm = registry.farms[CHECKED]
    down = "down"
    checks.apply(registry, "worker 0", {CHECKED: {"h1": down, "h3": down}}, full=False)
    assert farm.hosts["h1"].probe.verdict(0, 0.0) == "down"
    assert farm.hosts["h2"].probe is None  # nothing said about it
    assert farm.hosts["h3"].probe is None  # not checked here: what another server says is moot
    view = farm.view()
    checks.apply(registry, "worker 0", {CHECKED: {"h1": down}}, full=False)
    assert farm.view() is view  # the same verdict again changes nothing
    checks.apply(registry, "worker 0", {CHECKED: {"h2": "up"}}, full=True)
    assert farm.hosts["h1"].probe.verdict(0, 0.0) is None  # no longer probed there
    assert farm.hosts["h2"].probe.verdict(0, 0.0) == "up"
    assert farm.view() is not view  # the next query sees the new verdicts
    assert checks.snapshot(registry) == {}  # a worker has no trackers: it sends nothing


# -- the latency histogram and the query log cover every worker --------------------------------


def query_lines(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "lbdns.query"]


def test_latency_and_the_query_log_cover_every_worker(tmp_path):
    config = tmp_path / "lbdns.yaml"
    config.write_text("query_log: 1.0\nquery_log_rate: 100000\n")
    extra = ("--log-format", "json")
    with LbdnsProcess(tmp_path, config=config, extra=extra, workers=2) as process:
        sent = ask_from_many(process, 200)
        assert sent == 200
        by_worker = wait_for(
            lambda: (
                (m := metric(process, "lbdns_dns_worker_queries_total"))
                and sum(m.values()) == sent
                and m
            ),
            what="every worker's queries counted",
        )
        mine = by_worker['{worker="0"}']
        assert 0 < mine < sent  # both workers answered
        latency = metric(process, "lbdns_dns_latency_seconds_count")[""]
        # Each query came alone, so each was timed; worker 0 alone timed only its own.
        assert mine < latency <= sent
        assert latency >= 0.9 * sent
        buckets = metric(process, "lbdns_dns_latency_seconds_bucket")
        assert buckets['{le="+Inf"}'] == latency
        written = wait_for(
            lambda: (
                metric(process, "lbdns_query_log_lines_total").get('{result="written"}') == sent
            ),
            what="every worker's query-log lines counted",
        )
        assert written
    lines = query_lines(process.log())  # each a whole JSON line, whoever wrote it
    assert len(lines) == sent
    counted = {w: sum(1 for line in lines if line["worker"] == w) for w in (0, 1)}
    assert counted[0] == mine and counted[1] == sent - mine
    assert all(line["farm"] == FARM and line["rcode"] == "NOERROR" for line in lines)


def test_rate_limit_and_cookie_counters_cover_every_worker(tmp_path):
    # A rate of 1 a second with a burst of 1: the first answer per network and class goes,
    # every later one in the run is limited (slip 1: each limited answer comes back TC=1).
    config = tmp_path / "lbdns.yaml"
    config.write_text("rrl: {enabled: true, rate: 1, burst: 1, slip: 1}\n")
    with LbdnsProcess(tmp_path, config=config, workers=2) as process:
        truncated = 0
        asked, with_cookie = 120, 40
        for i in range(asked):  # a new socket each: the kernel spreads them over the workers
            query = dns.message.make_query(FARM, "A", use_edns=0)
            if i < with_cookie:  # a client cookie alone: limited too, answered BADCOOKIE
                query.use_edns(0, options=[dns.edns.CookieOption(os.urandom(8), b"")])
            response = dns.query.udp(query, process.host, port=process.port, timeout=3)
            truncated += bool(response.flags & dns.flags.TC)
        by_worker = wait_for(
            lambda: (
                (m := metric(process, "lbdns_dns_worker_queries_total"))
                and sum(m.values()) == asked
                and m
            ),
            what="every worker's queries counted",
        )
        assert 0 < by_worker['{worker="0"}'] < asked  # both workers answered
        # Each worker has its own bucket for the network: one answer each went through.
        assert asked - with_cookie - 2 <= truncated <= asked - with_cookie

        def limited_everywhere():
            slipped = metric(process, "lbdns_dns_rrl_limited_total")
            cookies = metric(process, "lbdns_dns_cookies_total")
            # A limited answer to a client cookie alone is slipped as BADCOOKIE, not TC=1.
            bad = cookies.get('{result="badcookie"}', 0)
            if slipped.get('{action="slipped",class="answer"}') == truncated + bad:
                return cookies
            return None

        cookies = wait_for(limited_everywhere, what="every worker's limited answers counted")
        assert cookies['{result="client_only"}'] == with_cookie
        assert with_cookie - 2 <= cookies['{result="badcookie"}'] <= with_cookie
        assert metric(process, "lbdns_dns_rrl_networks")[""] == 2  # one table per worker


def test_workers_run_the_main_process_code_whatever_the_working_directory_holds(tmp_path):
    # Started from a folder that holds another lbdns/ (a source checkout, say), a worker must
    # import the package the main process runs, compiled UDP loop included, not that folder's.
    shadow = tmp_path / "lbdns"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the shadow package was imported')\n")
    log = tmp_path / "serve.log"
    lbdns_command = Path(sys.executable).parent / "lbdns"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(lbdns_command), "serve", "--zones", str(EXAMPLE_ZONES), "--workers", "2"]
            + ["--dns", "127.0.0.1:0", "--http", "off", "--data-dir", str(tmp_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        wait_for(lambda: "DNS from 2 worker processes" in log.read_text(), what="two workers")
        text = log.read_text()
        assert text.count("(UDP batched, compiled loop, and TCP)") == 2, text
        assert "shadow" not in text and "Traceback" not in text, text
    finally:
        proc.terminate()
        proc.wait(10)
