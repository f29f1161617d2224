import pytest
from support import LbdnsProcess


@pytest.fixture
def lbdns(tmp_path):
    """A running ``lbdns serve`` on the example zone (UDP/TCP on 127.0.0.1, HTTP on loopback)."""
    with LbdnsProcess(tmp_path) as server:
        yield server


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    """Host changes made by a test stay in that test: the embedded store's default data dir
    (``$LBDNS_DATA_DIR``, else ./data) points into the test's own folder."""
    monkeypatch.setenv("LBDNS_DATA_DIR", str(tmp_path / "data"))
