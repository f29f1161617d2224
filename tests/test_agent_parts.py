"""The agent's parts in process: config validation table, connection counters on real sockets,
check thresholds, backoff, rate-limited logs, custom metric parsing and the advice hook."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket

import pytest
from aiohttp import web

from lbdns import yamlfile
from lbdns.agent import config as agent_config
from lbdns.agent import ebpf
from lbdns.agent.config import Advice, Check
from lbdns.agent.custom import MetricError, parse_json, parse_text
from lbdns.agent.ebpf import EbpfCounter
from lbdns.agent.health import CheckState
from lbdns.agent.measure import CpuMeter, NetlinkCounter, ProcCounter, connection_counter
from lbdns.agent.push import backoff_delay
from lbdns.agent.ratelog import RateLimitedLog
from lbdns.agent.shed import AdviceHook
from lbdns.errors import ConfigError, ConfigErrors

BASE = "farm: chat.example.test.\nhost: web1\nservers: [http://127.0.0.1:8053]\n"


def parse(text: str, need_servers: bool = True):
    return agent_config.parse(yamlfile.parse(text, "agent.yaml", ConfigError), need_servers)


def errors_of(text: str) -> str:
    with pytest.raises(ConfigErrors) as info:
        parse(text)
    return str(info.value)


# (config text, substring the error must contain)
BAD = [
    ("host: web1\nservers: [http://x:1]\n", "line 1: farm: missing: name the farm"),
    ("farm: chat.example.test.\nhost: web1\n", "servers: missing: list the lbdns servers"),
    (BASE + "interval: 0\n", "line 4: interval: must be between 0.05 and 3600, got 0"),
    (BASE + "intervall: 1\n", "line 4: intervall: unknown key (expected one of"),
    (BASE + "connections: {ports: [0]}\n", "connections.ports.0: must be between 1 and 65535"),
    (BASE + "connections: {ports: [80], method: bpf}\n", "connections.method: must be one of"),
    (BASE + "connections: {ports: [80], recount: 0}\n", "connections.recount: must be between 1"),
    (BASE + "connections: {port: 80}\n", "connections.port: unknown key"),
    ("farm: chat..test.\nservers: [http://x:1]\n", "farm: 'chat..test.' has an empty label"),
    (BASE.replace("host: web1", "host: 'web 1'"), "host: host names are"),
    ("farm: a.test.\nservers: [ftp://x]\n", "servers.0: must be an http:// or https:// URL"),
    ("farm: a.test.\nservers: [{url: http://x:1, tokn: y}]\n", "servers.0.tokn: unknown key"),
    ("farm: a.test.\nservers: [http://x:1, http://x:1/]\n", "servers.1: duplicate server"),
    (BASE + "token: short\n", "token: a token is at least 8 characters"),
    (BASE + "token_env: LBDNS_NO_SUCH_VARIABLE\n", "token_env: environment variable"),
    (BASE + "token: abcdefghij\ntoken_file: /x\n", "give only one of token, token_file"),
    (BASE + "health: {checks: [{tcp: 'localhost'}]}\n", "health.checks.0.tcp: must be host:port"),
    (BASE + "health: {checks: [{http: 'http://x/', status: 700}]}\n", "status: must be between"),
    (BASE + "health: {checks: [{tcp: 'x:1', http: 'http://x/'}]}\n", "exactly one of tcp or http"),
    (BASE + "health: {checks: [{tcp: 'x:1'}], fail_after: 0}\n", "health.fail_after: must be"),
    (BASE + "health: {checks: []}\n", "health.checks: must be a list"),
    (BASE + "metrics: [{name: cpu, command: x}]\n", "metrics.0.name: 'cpu' is measured by"),
    (BASE + "metrics: [{name: Q, command: x}]\n", "metrics.0.name: metric names are"),
    (BASE + "metrics: [{command: x, timeout: 0}]\n", "metrics.0.timeout: must be between"),
    (BASE + "metrics: [{command: []}]\n", "metrics.0.command: must be a shell command"),
    (BASE + "register: {capacity: 1}\n", "register: a host needs an a or aaaa address"),
    (BASE + "register: {a: 10.0.0.300}\n", "register.a"),
    (BASE + "register: {a: 10.0.0.1, capacity: -1}\n", "register.capacity: must be a positive"),
    (BASE + "register: {a: 10.0.0.1, drain_timeout: x}\n", "register.drain_timeout: must be"),
    (BASE + "advice: {url: 'http://10.1.1.1/shed'}\n", "advice.url: must point at the local"),
    (BASE + "advice: {}\n", "advice: give exactly one of command or url"),
    (BASE + "backoff: {initial: 5, max: 1}\n", "backoff: initial must not be above max"),
    (BASE + "log_level: loud\n", "log_level: must be one of"),
    ("- a\n- b\n", "an agent config must be a mapping"),
]


@pytest.mark.parametrize("text, expected", BAD)
def test_bad_config_names_key_and_reason(text, expected):
    message = errors_of(text)
    assert expected in message
    assert message.startswith("agent.yaml: ")


def test_every_problem_is_reported_in_one_run():
    message = errors_of(BASE + "interval: -1\ntimeout: x\nfoo: 1\n")
    assert "interval" in message and "timeout" in message and "foo: unknown key" in message


def test_full_config_parses(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("file-token-123\n")
    monkeypatch.setenv("LBDNS_TEST_REGISTER", "register-token-1")
    config = parse(
        f"""
farm: Chat.Example.Test
host: web7
interval: 0.5
timeout: 1.5
backoff: {{initial: 0.2, max: 10}}
token_file: {token_file}
servers:
  - http://127.0.0.1:8053/
  - url: https://ns2.example.test:8443
    token: own-token-456
connections: {{ports: [443, 5222, 443], method: proc}}
metrics:
  - {{name: queue, command: [/bin/echo, "3"], timeout: 0.3}}
  - {{url: "http://127.0.0.1:9000/stats"}}
health:
  fail_after: 4
  recover_after: 3
  checks:
    - {{tcp: "[::1]:5222"}}
    - {{http: "http://127.0.0.1:8080/healthz", status: [200, 204]}}
register:
  register_token_env: LBDNS_TEST_REGISTER
  a: 192.0.2.7
  capacity: 4
  labels: {{rack: 3}}
advice: {{command: "/usr/local/bin/shed {{n}}", min_interval: 60}}
"""
    )
    assert config.farm == "chat.example.test." and config.host == "web7"
    assert [s.url for s in config.servers] == [
        "http://127.0.0.1:8053",
        "https://ns2.example.test:8443",
    ]
    assert config.servers[0].token == "file-token-123"
    assert config.servers[1].token == "own-token-456"
    assert {s.register_token for s in config.servers} == {"register-token-1"}
    assert config.ports == (443, 5222) and config.connections_method == "proc"
    assert config.metrics[0].command == ("/bin/echo", "3") and config.metrics[0].timeout == 0.3
    assert config.metrics[1].timeout == 0.5  # default: at most the interval
    assert config.checks[0].host == "::1" and config.checks[0].port == 5222
    assert config.checks[1].status == (200, 204)
    assert (config.fail_after, config.recover_after) == (4, 3)
    assert config.register.labels == {"rack": "3"} and config.register.capacity == 4
    assert config.register.body()["a"] == ["192.0.2.7"]
    assert config.advice.command[:2] == ("/bin/sh", "-c") and config.advice.min_interval == 60


def test_example_config_in_agents_folder_is_valid():
    from support import ROOT

    config = agent_config.load(ROOT / "agents" / "agent.example.yaml")
    assert config.farm == "chat.example.test."


# -- connection counting ------------------------------------------------------------------------


def _pairs(family: int, host: str, n: int):
    listen = socket.socket(family, socket.SOCK_STREAM)
    listen.bind((host, 0))
    listen.listen(64)
    socks = [listen]
    for _ in range(n):
        socks.append(socket.create_connection((host, listen.getsockname()[1])))
        socks.append(listen.accept()[0])
    return listen.getsockname()[1], socks


def ebpf_counter(ports):
    return EbpfCounter(ports, NetlinkCounter(ports))


@pytest.mark.parametrize(
    "counter_class",
    [
        NetlinkCounter,
        ProcCounter,
        pytest.param(ebpf_counter, id="ebpf"),
    ],
)
def test_counters_count_established_server_ends_on_ipv4_and_ipv6(counter_class, request):
    if counter_class is ebpf_counter:
        request.getfixturevalue("tracefs")
    port4, socks4 = _pairs(socket.AF_INET, "127.0.0.1", 4)
    port6, socks6 = _pairs(socket.AF_INET6, "::1", 3)
    other, socks_other = _pairs(socket.AF_INET, "127.0.0.1", 2)
    try:
        counter = counter_class([port4, port6])
        assert counter.count() == 7  # client ends have other local ports; listeners are not
        assert counter_class([port6]).count() == 3
        assert counter_class([other, port4, port6]).count() == 9
        socks4[1].close()  # one client end closed: its server end leaves ESTABLISHED
        assert counter.count() == 6
        more = [socket.create_connection(("::1", port6)) for _ in range(4)]
        more += [socks6[0].accept()[0] for _ in range(4)]
        socks6 += more
        assert counter.count() == 10
        socks6[2].close()  # a server end closed by the application
        assert counter.count() == 9
        counter.close()
    finally:
        for sock in socks4 + socks6 + socks_other:
            sock.close()


class TickingClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BusyFullCount:
    """A full count that connects once more while it walks the table, when told to."""

    def __init__(self, ports, listen):
        self.netlink = NetlinkCounter(ports)
        self.listen = listen
        self.busy = False
        self.opened = []
        self.calls = 0

    def count(self):
        self.calls += 1
        counted = self.netlink.count()
        if self.busy:
            self.opened.append(socket.create_connection(self.listen.getsockname()))
            self.opened.append(self.listen.accept()[0])
        return counted

    def close(self):
        self.netlink.close()


@pytest.mark.usefixtures("tracefs")
def test_ebpf_counter_recounts_on_schedule_and_never_from_a_moving_table():
    port, socks = _pairs(socket.AF_INET, "127.0.0.1", 5)
    full = BusyFullCount([port], socks[0])
    clock = TickingClock()
    counter = EbpfCounter([port], full, recount_every=60.0, clock=clock)
    try:
        assert counter.count() == 5 and counter.recounts == 1
        # Between recounts only the kernel's counters are read.
        socks.append(socket.create_connection(("127.0.0.1", port)))
        socks.append(socks[0].accept()[0])
        clock.now += 59.0
        assert counter.count() == 6 and full.calls == 1
        # A base gone wrong (say a change the start-up count saw and the counters also did)
        # is set right by the next recount...
        counter.base += 3
        assert counter.count() == 9
        clock.now += 1.0
        assert counter.count() == 6 and full.calls == 2
        # ...but not by one during which a connection came: the walk may or may not have seen
        # it, so that recount is not used, and the counters still count the newcomer.
        counter.base += 3
        full.busy = True
        clock.now += 60.0
        assert counter.count() == 10 and full.calls == 3  # 9 + the newcomer: base kept
        full.busy = False
        clock.now += 60.0
        assert counter.count() == 7 and full.calls == 4
    finally:
        counter.close()
        for sock in socks + full.opened:
            sock.close()


@pytest.mark.usefixtures("tracefs")
def test_ebpf_counter_counts_accepted_connections_since_it_started():
    port, socks = _pairs(socket.AF_INET, "127.0.0.1", 3)
    port6, socks6 = _pairs(socket.AF_INET6, "::1", 0)
    counter = ebpf_counter([port, port6])
    try:
        assert counter.accepted() == 0 and counter.count() == 3  # those before are not arrivals
        for host, listen, group in (("127.0.0.1", socks[0], socks), ("::1", socks6[0], socks6)):
            for _ in range(4):
                group.append(socket.create_connection((host, listen.getsockname()[1])))
                group.append(listen.accept()[0])
        assert counter.accepted() == 8 and counter.count() == 11
        for sock in socks[1:5]:  # two pairs closed: fewer connections, as many arrivals
            sock.close()
        assert counter.count() == 9 and counter.accepted() == 8
    finally:
        counter.close()
        for sock in socks + socks6:
            sock.close()


def test_ebpf_refused_with_the_reason_and_auto_falls_back():
    ports = list(range(20000, 20065))  # one more port than the program takes
    with pytest.raises(ebpf.Unavailable, match="1 to 64 ports"):
        connection_counter(ports, "ebpf")
    counter = connection_counter(ports, "auto")
    assert counter.name == "netlink" and counter.count() == 0
    counter.close()


@pytest.mark.usefixtures("tracefs")
def test_auto_prefers_ebpf_and_explicit_methods_are_kept():
    port, socks = _pairs(socket.AF_INET, "127.0.0.1", 2)
    try:
        for method, kind in (
            ("auto", EbpfCounter),
            ("ebpf", EbpfCounter),
            ("netlink", NetlinkCounter),
            ("proc", ProcCounter),
        ):
            counter = connection_counter([port], method)
            assert type(counter) is kind, method
            assert counter.count() == 2
            counter.close()
    finally:
        for sock in socks:
            sock.close()


def test_netlink_filter_counts_what_proc_counts():
    # The kernel-side port filter must agree with /proc on every kind of socket near the port:
    # server ends (counted), client ends whose *remote* port is the app port (not counted), a
    # client bound to the app port on another address (local port matches: counted), and more
    # server ends than one 32 KiB dump buffer holds, so the count spans several buffers.
    port, socks = _pairs(socket.AF_INET, "127.0.0.1", 350)
    port6, socks6 = _pairs(socket.AF_INET6, "::1", 5)
    other, socks_other = _pairs(socket.AF_INET, "127.0.0.1", 0)
    bound = socket.socket()
    bound.bind(("127.0.0.2", port))
    bound.connect(("127.0.0.1", other))
    socks += socks6 + socks_other + [bound, socks_other[0].accept()[0]]
    try:
        for ports in ([port], [port, port6], [1, port6, port, 2], [other]):
            netlink, proc = NetlinkCounter(ports), ProcCounter(ports)
            assert netlink.count() == proc.count()
            netlink.close()
        assert NetlinkCounter([port]).count() == 351
        assert NetlinkCounter([other]).count() == 1  # the server end of the bound client
        assert NetlinkCounter([port, port6]).count() == 356
    finally:
        for sock in socks:
            sock.close()


def test_cpu_meter_averages_over_time(tmp_path):
    stat = tmp_path / "stat"

    def write(busy: int, idle: int) -> None:
        stat.write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3\n")

    write(0, 1000)
    meter = CpuMeter(window=0.0, path=str(stat))
    assert meter.sample() == 0.0
    write(500, 1500)  # half busy since the last sample
    assert meter.sample() == pytest.approx(0.5)


# -- health thresholds, backoff, logs -------------------------------------------------------------


def test_check_thresholds():
    state = CheckState(Check("tcp", "x:1"), fail_after=3, recover_after=2)
    state.record(True)
    assert state.healthy is True
    # Two failures are not enough, a success resets the count.
    for ok in (False, False, True, False, False):
        state.record(ok, "refused")
        assert state.healthy is True
    assert state.record(False, "refused") is True  # third in a row: changed
    assert state.healthy is False and state.last_error == "refused"
    state.record(True)
    assert state.healthy is False
    assert state.record(True) is True
    assert state.healthy is True


def test_first_result_counts_at_once():
    state = CheckState(Check("tcp", "x:1"), fail_after=3, recover_after=2)
    assert state.record(False, "refused") is False  # no change to report: it had no state
    assert state.healthy is False


def test_backoff_doubles_with_jitter_up_to_the_maximum():
    rng = random.Random(7)
    for failures, low, high in ((1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (10, 15, 30)):
        delays = [backoff_delay(failures, 0.5, 30.0, rng) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high
        assert max(delays) - min(delays) > (high - low) / 2  # spread out


def test_rate_limited_log(caplog):
    now = [0.0]
    ratelog = RateLimitedLog(logging.getLogger("t"), every=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for second in range(120):
            now[0] = float(second)
            ratelog.log(logging.WARNING, "k", "server away")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["server away", "server away (59 more like this in the last 60 s)"]


# -- custom metrics -------------------------------------------------------------------------------


def test_custom_metric_output():
    assert parse_text("42\n", "queue") == {"queue": 42.0}
    assert parse_text("sessions 10\nrooms 2.5\n", None) == {"sessions": 10.0, "rooms": 2.5}
    assert parse_json({"sessions": 3, "version": "1.2", "ok": True}, None, "u") == {"sessions": 3.0}
    assert parse_json(5, "queue", "u") == {"queue": 5.0}
    for text, name, reason in (
        ("42\n", None, "has no name"),
        ("a b c\n", None, "expected 'name value'"),
        ("Sessions 1\n", None, "not a metric name"),
        ("cpu 1\n", None, "measured by the agent itself"),
        ("queue -1\n", None, "not a non-negative number"),
        ("queue nan\n", None, "not a non-negative number"),
    ):
        with pytest.raises(MetricError, match=reason):
            parse_text(text, name)


# -- the advice hook ------------------------------------------------------------------------------


async def _advice_round(advice: Advice, offers: list[int]):
    import aiohttp

    received = []

    async def shed(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/shed", shed)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    if advice is not None and advice.url:
        advice = Advice(url=f"http://127.0.0.1:{port}/shed", min_interval=advice.min_interval)
    async with aiohttp.ClientSession() as session:
        ratelog = RateLimitedLog(logging.getLogger("t"), 60)
        hook = AdviceHook(advice, "chat.example.test.", "web1", session, ratelog)
        for n in offers:
            hook.offer(n, "http://ns1")
            # The hand-over done before the next offer: only min_interval may turn that away.
            if hook._task:
                await hook._task
        await hook.close()
    await runner.cleanup()
    return hook, received


def test_advice_is_posted_to_the_local_url_once_per_min_interval():
    hook, received = asyncio.run(
        _advice_round(Advice(url="http://127.0.0.1/", min_interval=30), [12, 40])
    )
    assert received == [{"shed": 12, "farm": "chat.example.test.", "host": "web1"}]
    assert hook.handed == 1


def test_advice_command_gets_the_number(tmp_path):
    out = tmp_path / "shed"
    advice = Advice(command=("/bin/sh", "-c", f'echo "$1" > {out}'), min_interval=0)
    asyncio.run(_advice_round(advice, [7]))
    assert out.read_text().strip() == "7"


def test_advice_off_does_nothing():
    hook, received = asyncio.run(_advice_round(None, [5]))
    assert hook.handed == 0 and received == []
