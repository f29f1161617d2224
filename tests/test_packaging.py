"""Packaging: ``python -m build`` gives a wheel and an sdist that carry the status page, the
OpenAPI file, the example configs, the systemd units and the monitoring files, and the compiled
UDP loop (its C source in the sdist, built into the wheel: this machine has a C compiler); the
installed wheel runs (``lbdns -V``, completion scripts) and finds its assets and its extension
outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from support import ROOT

from lbdns import __version__

PACKAGE_FILES = (
    "lbdns/openapi.json",
    "lbdns/web/static/status.html",
    "lbdns/web/static/status.js",
    "lbdns/web/static/status.css",
)
SHARED_FILES = (
    "share/lbdns/examples/lbdns.example.yaml",
    "share/lbdns/examples/agent.example.yaml",
    "share/lbdns/examples/example.test.yaml",
    "share/lbdns/systemd/lbdns.service",
    "share/lbdns/systemd/lbdns-agent.service",
    "share/lbdns/monitoring/lbdns.rules.yml",
    "share/lbdns/monitoring/lbdns.dashboard.json",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_wheel_carries_assets_examples_and_entry_point(dist):
    (wheel,) = dist.glob(f"lbdns-{__version__}-cp3*-linux_*.whl")  # it holds an extension
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in PACKAGE_FILES:
        assert name in names
    for extension in ("lbdns/dnsserver/_udpfast.", "lbdns/balance/_direct."):
        assert [n for n in names if n.startswith(extension) and n.endswith(".so")], extension
    data = f"lbdns-{__version__}.data/data/"
    for name in SHARED_FILES:
        assert data + name in names, name
    entry_points = zipfile.ZipFile(wheel).read(f"lbdns-{__version__}.dist-info/entry_points.txt")
    assert b"lbdns = lbdns.cli.main:main" in entry_points
    assert not [n for n in names if n.startswith("tests/")]


def test_sdist_carries_the_same_and_the_docs(dist):
    (sdist,) = dist.glob(f"lbdns-{__version__}.tar.gz")
    top = f"lbdns-{__version__}/"
    names = {n.removeprefix(top) for n in tarfile.open(sdist).getnames()}
    for name in PACKAGE_FILES:
        assert name in names
    for source in (
        "systemd/lbdns.service",
        "monitoring/lbdns.rules.yml",
        "README.md",
        "lbdns/dnsserver/_udpfast.c",
        "lbdns/balance/_direct.c",
    ):
        assert source in names, source


def test_installed_wheel_runs_and_finds_its_files(dist, tmp_path):
    (wheel,) = dist.glob("lbdns-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The installed copy first on the path (the dependencies come from this environment), run
    # from a folder that is not the source tree.
    env = {**os.environ, "PYTHONPATH": str(target)}

    def lbdns(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lbdns", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
        )

    assert lbdns("-V").stdout.strip() == f"lbdns {__version__}"
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import lbdns.web.status as s, lbdns, lbdns.dnsserver._udpfast as u;"
            "import lbdns.balance._direct as d;"
            " print(s.STATIC, lbdns.__file__, u.__file__, d.__file__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout.split()
    assert where[1].startswith(str(target)), where
    assert where[2].startswith(str(target)), where  # the wheel's own compiled loop
    assert where[3].startswith(str(target)), where  # and its compiled farm answers
    assert (Path(where[0]) / "status.js").is_file()
    bash = lbdns("completion", "bash").stdout
    assert "complete -o bashdefault -F _shtab_lbdns lbdns" in bash
    assert "#compdef lbdns" in lbdns("completion", "zsh").stdout
    # The script completes subcommands in a real bash.
    script = tmp_path / "lbdns.bash"
    script.write_text(bash)
    done = subprocess.run(
        [
            "bash",
            "-c",
            f"source {script}; COMP_WORDS=(lbdns hosts dr); COMP_CWORD=2; "
            '_shtab_lbdns; printf "%s\\n" "${COMPREPLY[@]}"',
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.split() == ["drain"], done.stderr


def test_without_a_c_compiler_the_install_still_works_with_the_python_loop(dist, tmp_path):
    # The extension is optional: where it cannot be built (here: a compiler that always fails)
    # the sdist still installs, and the server reads UDP with the same loop in Python.
    (sdist,) = dist.glob(f"lbdns-{__version__}.tar.gz")
    target = tmp_path / "site"
    env = {**os.environ, "CC": "false", "LDSHARED": "false"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [str(sdist)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(target.glob("lbdns/dnsserver/_udpfast*.so"))
    assert not list(target.glob("lbdns/balance/_direct*.so"))
    probe = (
        "import socket, lbdns.dnsserver.transport as t, lbdns.balance.farm as f;"
        "s = t.bind_udp('127.0.0.1', 0);"
        "print(t.UdpListener(s, lambda *a: None, t.TransportStats()).kind);"
        "print(f._direct)"
    )
    kind = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        timeout=60,
    )
    assert kind.stdout.splitlines() == [
        "batched, in Python: the compiled loop was not built at install",
        "None",  # and farms answer in Python (the same answers, tests/test_direct_compiled.py)
    ], kind.stderr
