"""Smoke test of W6 with history on and off (``benchmarks/w6_redis.py``), tiny: two
processes of ``benchmarks/redis_app.py`` on the shared Redis (a prefix of its own),
``WSCHAT_HISTORY=redis`` (``RedisHistoryStore``) against ``off``. No timing is
asserted: only exactly-once delivery, that history on numbers every delivery and
history off none, and the summary's ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.redis_server import need_redis

ROOT = Path(__file__).resolve().parents[2]


def test_w6_history_on_and_off_deliver_everything_once(tmp_path: Path) -> None:
    url = need_redis()
    out = tmp_path / "w6.json"
    argv = [sys.executable, "-m", "benchmarks.w6_redis", "--redis", url]
    argv += ["--clients", "8", "--senders", "2", "--messages", "6", "--json", str(out)]
    proc = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["lost"] == summary["duplicates"] == summary["closed"] == 0
    assert summary["deliveries"] == summary["expected_deliveries"] == 3 * 8 * 2 * 6
    assert summary["history_on_off_ratio"] > 0
    assert len(summary["history_on_off_ratios"]) == 1
    runs = json.loads(out.read_text())["runs"]
    assert [(r["case"], r["processes"], r["history"]) for r in runs] == [
        ("memory", 1, "memory"),
        ("redis", 2, "off"),
        ("redis_history", 2, "redis"),
    ]
    for r in runs:
        numbered = r["numbered_deliveries"]
        assert numbered == (0 if r["history"] == "off" else r["deliveries"]), r


def test_redis_app_refuses_an_unknown_history_choice() -> None:
    argv = [sys.executable, "-c", "import redis_app"]
    proc = subprocess.run(
        argv,
        cwd=ROOT / "benchmarks",
        env={**os.environ, "WSCHAT_HISTORY": "disk"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "WSCHAT_HISTORY: redis, off or unset, not 'disk'" in proc.stderr
