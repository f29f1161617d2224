"""Health checks from two lbdns servers sharing a real redis-server: a host is down when a
majority of the servers that probe it see it fail, so one server's broken path to a host does
not take the host out for everyone.

Server A probes from 127.0.0.2, server B from 127.0.0.3 (``--check-source``); the listener of
h1 resets every connection from 127.0.0.3, as a firewall between B and h1 would.
"""

from __future__ import annotations

import pytest
from probe_support import FARM, host, state, zone_folder
from redis_support import RedisProcess, redis_available
from support import LbdnsProcess, wait_for

from lbdns.testing.backend import Backend

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")

INTERVAL = 0.2


def answered(server, rounds: int = 10) -> set[str]:
    names = set()
    for _ in range(rounds):
        reply = server.query(FARM)
        names |= {rr.address for rrset in reply.answer for rr in rrset}
    return names


def test_a_host_only_one_server_cannot_reach_stays_up(tmp_path):
    h1 = Backend("127.0.0.11").start()
    h2 = Backend("127.0.0.12").start()
    h1.deny.add("127.0.0.3")
    zones = zone_folder(
        tmp_path,
        f"""\
        check: {{type: http, port: {h1.port}, interval: {INTERVAL}, rise: 2, fall: 2}}
        hosts:
          h1: {{a: 127.0.0.11}}
          h2: {{a: 127.0.0.12, check: {{port: {h2.port}}}}}
        """,
    )
    redis = RedisProcess(tmp_path / "redis").start()
    a = b = None
    try:
        options = ("--state", redis.url)
        a = LbdnsProcess(tmp_path, zones, extra=(*options, "--check-source", "127.0.0.2")).start()
        b = LbdnsProcess(tmp_path, zones, extra=(*options, "--check-source", "127.0.0.3")).start()

        def both_see_both_votes() -> bool:
            # B's own probes have failed twice (the first result alone decides, so "down" can
            # come after one), and each server has the other's vote (A learns B's through the
            # store a moment after B sees its own: wait for both, not only B).
            check = host(b, "h1")["check"]
            if check["servers"] != 2 or check["verdict_here"] != "down":
                return False
            if check["here"]["addresses"]["127.0.0.11"]["failures"] < 2:
                return False
            check = host(a, "h1")["check"]
            return check["servers"] == 2 and check["down"] == 1

        wait_for(both_see_both_votes, 10, 0.05, "B's own probes of h1 failing, votes exchanged")
        assert h1.count_from("127.0.0.3") > 0 and h1.count_from("127.0.0.2") > 0
        # One of two servers sees it fail: not a majority. Up on both, answered by both.
        for server in (a, b):
            check = host(server, "h1")["check"]
            assert (check["verdict"], check["down"], check["servers"]) == ("up", 1, 2)
            assert state(server, "h1")[0] == "up"
            assert "127.0.0.11" in answered(server)
        # Each server shows the other's results: last result, error and streaks per address.
        peers = host(b, "h1")["check"]["peers"]
        (peer,) = peers.values()
        assert peer["state"] == "up" and peer["addresses"]["127.0.0.11"]["last_ok"] is True
        mine = host(b, "h1")["check"]["here"]["addresses"]["127.0.0.11"]
        assert mine["last_ok"] is False and mine["failures"] >= 2
        # Reset by h1's side: seen on connect, on sending or on reading, depending on timing.
        resets = ("connection reset", "connection closed before a response", "broken pipe")
        assert mine["error"] in resets, mine

        # The application fails for everyone: both servers see it, both take it out.
        h1.mode = "error"
        for server in (a, b):
            wait_for(lambda s=server: state(s, "h1") == ("down", "check"), 5, 0.02, "h1 down")
        assert answered(b) == {"127.0.0.12"}
        h1.mode = "ok"
        for server in (a, b):
            wait_for(lambda s=server: state(s, "h1")[0] == "up", 5, 0.02, "h1 up again")

        # A stops: its votes lapse, and B's own probes (which fail) decide alone.
        a.stop()
        a = None
        wait_for(lambda: state(b, "h1") == ("down", "check"), 10, 0.05, "h1 down on B alone")
        assert host(b, "h1")["check"]["servers"] == 1
    finally:
        for server in (a, b):
            if server is not None:
                server.stop()
        redis.stop()
        h1.stop()
        h2.stop()
