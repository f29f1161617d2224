import pytest
from support import LbdnsProcess


@pytest.fixture
def lbdns(tmp_path):
    """A running ``lbdns serve`` on the example zone (UDP/TCP on 127.0.0.1, HTTP on loopback)."""
    with LbdnsProcess(tmp_path) as server:
        yield server
