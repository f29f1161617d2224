"""The balance benchmark runs with one command (short phases) and its numbers make sense."""

from __future__ import annotations

import json
import subprocess
import sys

from support import ROOT


def test_balance_quick(tmp_path):
    out = tmp_path / "rows.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "balance.py"), "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "avg peak/mean" in result.stdout
    rows = {row["policy"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {
        "least-load",
        "lowest-score",
        "weighted-round-robin",
        "round-robin",
        "ideal-proxy",
    }
    ll, rr, ideal = rows["least-load"], rows["round-robin"], rows["ideal-proxy"]
    assert ideal["mean_peak_to_mean"] < 1.05
    assert ll["mean_peak_to_mean"] < 1.1
    assert ll["mean_peak_to_mean"] < rr["mean_peak_to_mean"]
    assert ll["queries"] > 100 and ll["lost"] == 0
    assert ll["added_90pct_s"] is not None  # the added host filled up
