"""The short explanation over DNS: CH TXT ``_lbdns.<farm>``, off by default."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request

import dns.message
import dns.query
import dns.rcode
import pytest
from support import ROOT, LbdnsProcess

FARM = "chat.example.test."


def ask_ch(process: LbdnsProcess, name: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, "TXT", rdclass="CH")
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, process.host, port=process.port, timeout=3)


def test_off_by_default_is_refused(lbdns):
    assert ask_ch(lbdns, f"_lbdns.{FARM}").rcode() == dns.rcode.REFUSED


def test_explain_query_lists_hosts_and_the_last_answer(tmp_path):
    config = tmp_path / "lbdns.yaml"
    config.write_text("explain_queries: true\n")
    with LbdnsProcess(tmp_path, config=config) as process:
        body = {
            "reports": [
                {"farm": FARM, "host": h, "seq": 1, "metrics": {"connections": n}}
                for h, n in (("web1", 9), ("web2", 2), ("web3", 40))
            ]
        }
        request = urllib.request.Request(
            f"{process.http_url}/v1/reports", data=json.dumps(body).encode(), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        urllib.request.urlopen(request, timeout=5).close()
        process.query(FARM, "A")
        for tcp in (False, True):
            response = ask_ch(process, f"_lbdns.{FARM}", tcp=tcp)
            assert response.rcode() == dns.rcode.NOERROR
            texts = [b"".join(r.strings).decode() for rrset in response.answer for r in rrset]
            assert texts[0].startswith("web1 up load=9")
            assert texts[1].startswith("web2 up load=") and "score=1 " in texts[1]
            assert texts[-1].startswith("last A web2 herd=1 from 127.0.0.1")
        assert ask_ch(process, "_lbdns.nope.example.test.").rcode() == dns.rcode.REFUSED
        assert ask_ch(process, "version.bind.").rcode() == dns.rcode.REFUSED
        # Class IN still answers as before.
        assert process.query(FARM, "A").rcode() == dns.rcode.NOERROR


DIG = shutil.which("dig")


@pytest.mark.skipif(DIG is None, reason="dig is not installed")
def test_readme_explain_command_works_with_dig(tmp_path):
    # The command as the README and docs/balancing.md print it, run by a real dig; only the
    # port is this test's. (`dig -c CH TXT name` asks dig 9.18 for the name "TXT.".)
    readme = (ROOT / "README.md").read_text()
    (command,) = set(re.findall(r"`(dig @127\.0\.0\.1 -p 5353 [^`]*_lbdns\.[^`]*)`", readme))
    config = tmp_path / "lbdns.yaml"
    config.write_text("explain_queries: true\n")
    with LbdnsProcess(tmp_path, config=config) as process:
        args = command.replace("-p 5353", f"-p {process.port}").split()
        done = subprocess.run(
            [DIG, *args[1:], "+tries=1", "+time=3"], capture_output=True, text=True, timeout=30
        )
    assert "status: NOERROR" in done.stdout, done.stdout
    assert re.search(r"_lbdns\.chat\.example\.test\.\s+\d+\s+CH\s+TXT\s+\"web1 ", done.stdout)
