import os
import subprocess
from pathlib import Path

import pytest
from support import AUTH_ZONES, LbdnsProcess

from lbdns.agent import ebpf


@pytest.fixture
def lbdns(tmp_path):
    """A running ``lbdns serve`` on the example zone (UDP/TCP on 127.0.0.1, HTTP on loopback)."""
    with LbdnsProcess(tmp_path) as server:
        yield server


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """An ``lbdns serve`` of the wire tests' zone (tests/zones/auth) on 127.0.0.1 and ::1, no
    HTTP, one per test module: the load-aware farm learns from every query, so modules that
    count records per answer must not inherit another module's resolver history."""
    tmp = tmp_path_factory.mktemp("auth")
    with LbdnsProcess(tmp, zones=AUTH_ZONES, dns=("127.0.0.1:0", "[::1]:0"), http=None) as proc:
        yield proc


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    """Host changes made by a test stay in that test: the embedded store's default data dir
    (``$LBDNS_DATA_DIR``, else ./data) points into the test's own folder."""
    monkeypatch.setenv("LBDNS_DATA_DIR", str(tmp_path / "data"))


def _mount_tracefs() -> None:
    """The agent's eBPF counter reads its tracepoint's id and format from tracefs. Hosts run by
    systemd mount it; a bare machine or container may not: mount it when root."""
    path = Path("/sys/kernel/tracing")
    if os.geteuid() == 0 and path.is_dir() and not (path / "events").exists():
        subprocess.run(["mount", "-t", "tracefs", "tracefs", str(path)], check=False)


@pytest.fixture(scope="session", autouse=True)
def _tracefs_mounted():
    # Once for the whole run, so that every agent on ``method: auto`` chooses alike.
    _mount_tracefs()


@pytest.fixture(scope="session")
def tracefs():
    """Skips a test of the eBPF counter where it cannot run (not root, no tracefs)."""
    try:
        ebpf.tracepoint()
    except ebpf.Unavailable as exc:
        pytest.skip(f"eBPF counting cannot run here: {exc}")
