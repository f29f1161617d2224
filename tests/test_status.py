"""The status page in headless Chromium, GET /v1/status, and ``lbdns status`` against a server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from obs_support import http, report, status
from support import ROOT, LbdnsProcess, stop_process, wait_for

FARM = "chat.example.test."
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A quiet headless browser: no GPU, no sandbox (root in CI), no background traffic.
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _reports(base: str, seq: int, loads: dict[str, float], healthy: set[str] | None = None):
    for host, connections in loads.items():
        ok = healthy is None or host in healthy
        # A long interval: a slow machine must not see the hosts go stale mid-test.
        assert report(base, host, seq, connections, healthy=ok, interval=10.0) == 200


def _traffic(server: LbdnsProcess, count: int) -> None:
    for _ in range(count):
        server.query("chat.example.test.", "A")


def test_status_json(lbdns):
    _reports(lbdns.http_url, 1, {"web1": 10, "web2": 30, "web3": 6}, healthy={"web1", "web2"})
    _traffic(lbdns, 12)

    def sampled_twice():
        farm = status(lbdns.http_url)["zones"][0]["farms"][0]
        return farm if len(farm.get("history", {}).get("times", [])) >= 2 else None

    wait_for(sampled_twice, timeout=4)
    _traffic(lbdns, 8)

    def shares_counted():
        farm = status(lbdns.http_url)["zones"][0]["farms"][0]
        recent = sum(h["recent_answers"] for h in farm["hosts"])
        return farm if recent == 20 else None  # every answer since the first sample

    farm = wait_for(shares_counted, timeout=4)
    hosts = {h["name"]: h for h in farm["hosts"]}
    assert farm["name"] == FARM and farm["policy"]
    assert {h: hosts[h]["state"] for h in hosts} == {"web1": "up", "web2": "up", "web3": "down"}
    assert hosts["web1"]["score"] == pytest.approx(10.0)  # 10 connections / capacity 1
    assert hosts["web2"]["score"] == pytest.approx(15.0)  # 30 / 2
    assert hosts["web2"]["connections"] == 30
    assert 0 <= hosts["web1"]["report_age"] < 5
    assert hosts["web3"]["recent_answers"] == 0 and hosts["web3"]["share"] == 0
    assert sum(h["share"] for h in hosts.values()) == pytest.approx(1.0)
    assert sum(h["answers"] for h in hosts.values()) == 20
    # Utilisation (lbdns.balance.capacity): the load of every fresh host, 10 + 30 + 6
    # connections, over the capacity of the up ones, 1 + 2; balance: 15 / 12.5.
    assert farm["utilisation"] == pytest.approx(46 / 3, abs=1e-4)
    assert farm["balance"] == pytest.approx(15 / 12.5)
    assert (farm["up"], farm["stale"], farm["down"]) == (2, 0, 1)
    history = farm["history"]
    assert set(history["load"]) == set(hosts)
    assert all(len(s) == len(history["times"]) for s in history["load"].values())
    assert history["load"]["web2"][-1] == pytest.approx(15.0)
    assert sum(sum(s) for s in history["answers"].values()) <= 20
    brief = status(lbdns.http_url, history=0)["zones"][0]["farms"][0]
    assert "history" not in brief


def test_page_and_data_behind_the_read_token(tmp_path):
    config = tmp_path / "lbdns.yaml"
    config.write_text("tokens:\n  - {name: viewer, secret: viewer-secret, role: read}\n")
    with LbdnsProcess(tmp_path, config=config) as server:
        code, body, headers = http(server.http_url + "/")
        assert code == 200 and b"status.js" in body  # the page shell carries no data
        assert headers["Content-Type"].startswith("text/html")
        code, body, headers = http(server.http_url + "/static/status.js")
        assert code == 200 and headers["Content-Type"].startswith("text/javascript")
        assert http(server.http_url + "/static/nothing.js")[0] == 404
        assert http(server.http_url + "/v1/status")[0] == 401
        assert http(server.http_url + "/v1/status", token="not-the-secret")[0] == 401
        data = status(server.http_url, token="viewer-secret")
        assert data["zones"][0]["origin"] == "example.test."


# -- lbdns status ------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lbdns", "status", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
        env={**os.environ, "LBDNS_TOKEN": ""},
    )


def test_cli_table_json_and_errors(lbdns):
    _reports(lbdns.http_url, 1, {"web1": 4, "web2": 8, "web3": 0}, healthy={"web1", "web2"})
    done = _cli("--server", lbdns.http_url)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "\x1b[" not in text  # not a terminal: no colours
    assert f"farm {FARM}" in text and "zone example.test." in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if "web" in line}
    assert rows["web1"][1] == "up" and rows["web1"][2] == "4"
    assert rows["web2"][1] == "up" and rows["web2"][2] == "4"  # 8 connections / capacity 2
    assert rows["web3"][1] == "down"
    done = _cli("--server", lbdns.http_url, "--json")
    assert done.returncode == 0
    data = json.loads(done.stdout)
    assert [h["state"] for h in data["zones"][0]["farms"][0]["hosts"]] == ["up", "up", "down"]
    done = _cli("--server", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert done.returncode == 1 and "cannot reach" in done.stderr


def test_cli_colours_on_a_terminal_and_watch(lbdns):
    _reports(lbdns.http_url, 1, {"web1": 4, "web2": 8, "web3": 0}, healthy={"web1", "web2"})
    pid, fd = pty.fork()
    if pid == 0:  # the child: lbdns status --watch on a terminal
        os.execvpe(
            sys.executable,
            [
                sys.executable,
                "-m",
                "lbdns",
                "status",
                "--server",
                lbdns.http_url,
                "--watch",
                "--interval",
                "0.3",
            ],
            {**os.environ, "TERM": "xterm", "NO_COLOR": "", "LBDNS_TOKEN": ""},
        )
    output = b""
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline and output.count(b"\x1b[2J") < 2:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    output += os.read(fd, 65536)
                except OSError:
                    break
    finally:
        os.kill(pid, 15)
        os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode(errors="replace")
    assert text.count("\x1b[2J") >= 2  # redrawn in place at least twice
    assert re.search(r"\x1b\[32mup\s*\x1b\[0m", text)  # up in green
    assert re.search(r"\x1b\[31;1mdown\s*\x1b\[0m", text)  # down in bold red


# -- the page in a real browser ------------------------------------------------------------------


class DevTools:
    """A headless Chromium driven over its DevTools websocket (one page, flattened session)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.http: aiohttp.ClientSession | None = None
        self.session_id: str | None = None
        self.ids = 0

    async def start(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                *HEADLESS,
                f"--user-data-dir={self.tmp / 'chromium'}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        endpoint = await asyncio.wait_for(self._endpoint(), 20)
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(endpoint, max_msg_size=64 * 1024 * 1024)
        target = await self.send("Target.createTarget", url=url)
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self.session_id = attached["sessionId"]

    async def _endpoint(self) -> str:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, self.proc.stderr.readline)
            if not line:
                raise RuntimeError("chromium exited before its DevTools endpoint was ready")
            match = re.search(rb"DevTools listening on (ws://\S+)", line)
            if match:
                return match.group(1).decode()

    async def send(self, method: str, **params) -> dict:
        self.ids += 1
        message = {"id": self.ids, "method": method, "params": params}
        if self.session_id and not method.startswith("Target."):
            message["sessionId"] = self.session_id
        await self.ws.send_json(message)
        while True:
            reply = await asyncio.wait_for(self.ws.receive_json(), 15)
            if reply.get("id") == self.ids:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 8.0):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"page never satisfied {expression!r} (last: {value!r})")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.proc is not None:
            stop_process(self.proc)
            self.proc.stderr.close()


STATES_JS = (
    "JSON.stringify(Object.fromEntries([...document.querySelectorAll('tr[data-host]')]"
    ".map(r => [r.dataset.host, r.dataset.state])))"
)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tests/run.sh installs it)")
def test_status_page_in_a_browser(lbdns, tmp_path):
    base = lbdns.http_url
    _reports(base, 1, {"web1": 3, "web2": 9, "web3": 5})
    _traffic(lbdns, 10)

    async def drive() -> bytes:
        browser = DevTools(tmp_path)
        try:
            await browser.start(base + "/")
            states = await browser.wait_for(
                f"(() => {{ const s = {STATES_JS}; return s.includes('web3') && s; }})()"
            )
            assert json.loads(states) == {"web1": "up", "web2": "up", "web3": "up"}
            text = await browser.evaluate("document.body.innerText")
            assert FARM in text and "least-load" in text, text
            updates = int(
                await browser.evaluate("document.getElementById('updated').dataset.updates")
            )

            # Change the farm behind the page's back: it must follow within a poll or two.
            code, body, _ = http(f"{base}/v1/farms/{FARM}/hosts/web2/disable", body={})
            assert code == 200, body
            for seq in range(2, 8):  # a few seconds of load and answers for the charts
                _reports(base, seq, {"web1": 3 + seq, "web3": 5 + 2 * seq}, healthy={"web1"})
                _traffic(lbdns, 15)
                await asyncio.sleep(0.45)
            expected = {"web1": "up", "web2": "disabled", "web3": "down"}
            compact = json.dumps(expected, separators=(",", ":"))
            await browser.wait_for(f"{STATES_JS} === {json.dumps(compact)}")
            later = int(
                await browser.evaluate("document.getElementById('updated').dataset.updates")
            )
            assert later >= updates + 2
            # One chart of load and one of answer share per farm, with a line per reporting host.
            lines = await browser.wait_for(
                "document.querySelectorAll('section.farm svg polyline').length >= 3 && "
                "document.querySelectorAll('section.farm svg polyline').length"
            )
            assert lines >= 3
            assert await browser.evaluate("document.getElementById('error').hidden") is True
            # The charts have values on the y axis and the time of day on the x axis.
            axes = json.loads(
                await browser.evaluate(
                    "JSON.stringify([...document.querySelectorAll('section.farm .chart')].map("
                    "c => ({y: [...c.querySelectorAll('.y-axis span')].map(s => s.textContent),"
                    " x: [...c.querySelectorAll('.x-axis span')].map(s => s.textContent)})))"
                )
            )
            assert len(axes) == 2
            load_axis, share_axis = axes
            assert share_axis["y"] == ["100%", "50%", "0%"]
            assert (
                float(load_axis["y"][0]) > float(load_axis["y"][1]) > 0 == float(load_axis["y"][2])
            )
            for axis in axes:
                assert len(axis["x"]) == 3 and all(
                    re.fullmatch(r"\d\d:\d\d:\d\d", t) for t in axis["x"]
                )
            # The one utilisation, as a percentage (the farm's load over its up capacity).
            farm = status(base, history=0)["zones"][0]["farms"][0]
            expected = f"{farm['utilisation'] * 100:.1f}%"
            await browser.wait_for(  # the page polls once a second: the next poll shows it
                f"document.querySelector('b.utilisation').textContent === {json.dumps(expected)}"
            )
            # A drain shows what it waits for, as the CLI does.
            code, body, _ = http(f"{base}/v1/farms/{FARM}/hosts/web2/drain?grace=60", body={})
            assert code == 200, body
            drain = await browser.wait_for(
                "(document.querySelector('[data-drain=web2]') || {}).textContent"
            )
            assert drain.startswith("web2: draining for ")
            assert "· answers: cached answers may name the host for " in drain
            assert "(TTL 5 s + grace 60 s)" in drain
            shot = await browser.send("Page.captureScreenshot", format="png")
            return base64.b64decode(shot["data"])
        finally:
            await browser.close()

    png = asyncio.run(asyncio.wait_for(drive(), 60))
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "status-page.png").write_bytes(png)


def _dump_dom(url: str, profile: Path) -> str:
    done = subprocess.run(
        [
            CHROMIUM,
            *HEADLESS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tests/run.sh installs it)")
def test_page_asks_for_the_read_token_and_uses_it(tmp_path):
    config = tmp_path / "lbdns.yaml"
    config.write_text("tokens:\n  - {name: viewer, secret: viewer-secret, role: read}\n")
    with LbdnsProcess(tmp_path, config=config) as server:
        dom = _dump_dom(server.http_url + "/", tmp_path / "profile1")
        assert '<form id="login">' in dom  # shown, not hidden
        assert "401: missing bearer token" in dom
        assert "data-host=" not in dom
        dom = _dump_dom(server.http_url + "/#token=viewer-secret", tmp_path / "profile2")
        assert '<form id="login" hidden="">' in dom
        states = dict(re.findall(r'data-host="(\w+)" data-state="(\w+)"', dom))
        assert states == {"web1": "new", "web2": "new", "web3": "new"}
