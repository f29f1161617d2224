"""Config files: every bad key or value is an error naming the file, line and key."""

import subprocess
import sys

import pytest

from lbdns import config
from lbdns.errors import ConfigErrors

BAD = [
    ("bogus: 1\n", "line 1: bogus: unknown key"),
    ("dns: 127.0.0.1:99999\n", "dns: bad port"),
    ("http: 'x:y'\n", "http: bad port"),
    ("state: postgres://x\n", "state: must be memory://"),
    ("log_format: xml\n", "log_format: must be one of text, json"),
    ("tcp_idle_timeout: -1\n", "tcp_idle_timeout: must be between"),
    ("tcp_max_connections: 1.5\n", "tcp_max_connections: must be an integer"),
    ("explain_queries: 'yes please'\n", "explain_queries: must be true or false"),
    ("udp_batch: 1\n", "udp_batch: must be true or false"),
    ("tokens: {a: 1}\n", "tokens: must be a list"),
    (
        "tokens:\n  - {name: a, secret: short, role: admin}\n",
        "tokens.0.secret: a secret is at least 8 characters",
    ),
    ("tokens:\n  - {name: a, secret: longenough, role: king}\n", "tokens.0.role: must be one of"),
    ("tokens:\n  - {secret: longenough, role: admin}\n", "tokens.0.name: every token needs a name"),
    (
        "tokens:\n  - {name: a, secret: longenough, role: register, networks: [nope]}\n",
        "tokens.0.networks.0: 'nope' is not an address range",
    ),
    ("tcp_max_per_address: 0\n", "tcp_max_per_address: must be between 1"),
    ("tcp_max_per_network: many\n", "tcp_max_per_network: must be an integer"),
    ("rrl: true\n", "rrl: must be a mapping of"),
    ("rrl: {ratee: 5}\n", "rrl.ratee: unknown key (expected one of big_size, burst, enabled"),
    ("rrl: {rate: 0}\n", "rrl.rate: must be between 1"),
    ("rrl: {enabled: 1}\n", "rrl.enabled: must be true or false"),
    ("rrl: {slip: 1.5}\n", "rrl.slip: must be an integer"),
    ("rrl: {ipv4_prefix: 33}\n", "rrl.ipv4_prefix: must be between 8 and 32"),
    ("rrl: {whitelist: 10.0.0.0/8}\n", "rrl.whitelist: must be a list of networks"),
    ("rrl: {whitelist: [10.0.0.0/8, nope]}\n", "rrl.whitelist.1: must be a network"),
    ("cookies: {secret: abc}\n", "cookies.secret: must be 32 hexadecimal digits"),
    ("cookies: {previous_secret: " + "zz" * 16 + "}\n", "cookies.previous_secret: must be 32"),
    ("cookies: {enabled: no, salt: 1}\n", "cookies.salt: unknown key"),
    ("identity: {enabled: yes please}\n", "identity.enabled: must be true or false"),
    ("identity: {id: ''}\n", "identity.id: must be a non-empty string"),
    ("identity: {version: 1}\n", "identity.version: unknown key"),
    ("- just\n- a list\n", "a config file must be a mapping"),
    ("dns: [\n", "invalid YAML"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_config_is_rejected_with_path_and_reason(tmp_path, text, expected):
    path = tmp_path / "lbdns.yaml"
    path.write_text(text)
    with pytest.raises(ConfigErrors) as info:
        config.load(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_command_line_overrides_file_and_paths_are_relative_to_file(tmp_path):
    path = tmp_path / "conf" / "lbdns.yaml"
    path.parent.mkdir()
    path.write_text("zones: z\ndns: ['127.0.0.1:1053']\nhttp: 127.0.0.1:9000\n")
    loaded = config.load(path, {"http": "127.0.0.1:9001"})
    assert loaded.zones == path.parent / "z"
    assert loaded.dns == (("127.0.0.1", 1053),)
    assert loaded.http == ("127.0.0.1", 9001)
    assert config.load(path, {"http": "off"}).http is None


def test_bad_command_line_value_names_the_flag():
    with pytest.raises(ConfigErrors) as info:
        config.load(None, {"dns": ["127.0.0.1:notaport"]})
    assert "--dns" in str(info.value)


def test_check_command_reports_config_errors(tmp_path):
    path = tmp_path / "lbdns.yaml"
    path.write_text("bogus: 1\nlog_level: loud\n")
    result = subprocess.run(
        [sys.executable, "-m", "lbdns", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "bogus: unknown key" in result.stderr
    assert "log_level: must be one of" in result.stderr


def test_rrl_section_parses_into_its_settings(tmp_path):
    path = tmp_path / "lbdns.yaml"
    path.write_text("rrl: {enabled: true, rate: 50, slip: 3, whitelist: [192.0.2.0/24]}\n")
    settings = config.load(path).rrl
    assert (settings.enabled, settings.rate, settings.slip) == (True, 50.0, 3)
    assert settings.whitelist == ("192.0.2.0/24",) and settings.ipv4_prefix == 24
    assert config.load(None).rrl.enabled is False  # off unless asked for
