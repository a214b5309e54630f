"""Smoke test of the big-room benchmarks: STORM (a join storm into one room) and
W1BIG (W1 in one room of 5,000), at tiny sizes.

They run end to end through ``benchmarks.run`` as a full run drives them, count the
server's frames and bytes exactly, and build their table rows. No timing is asserted:
timings belong in ``benchmarks/results``, not in tests. Nothing here depends on the
shape of presence (one frame per join, or coalesced ``joins``/``leaves`` lists) or on
how many members ``ready`` lists: only on ``ready`` frames existing and ``presence``
frames carrying the room's ``count``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run
from benchmarks.run import (
    GEN_BUSY_PCT,
    WORKLOADS,
    Case,
    install_node_deps,
    markdown,
    run_case,
)


@pytest.fixture(scope="module")
def node() -> str:
    """Skip when Node is missing; install the npm dependencies if they are not yet."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Node load generator cannot run")
    problem = install_node_deps()
    assert problem is None, problem
    return "node"


def storm(kind: str, n: int, tmp_path: Path, *extra: str) -> dict[str, Any]:
    case = Case(f"storm-{kind}", kind, "storm", ["--n", str(n), *extra], loadgen="node")
    result = run_case(case, tmp_path)
    assert "error" not in result, result.get("error")
    assert result["loadgen"] == "node"
    assert result["server_errors"] == 0
    # Every result says how busy the generator was, and flags it above the limit.
    assert 0 <= result["loadgen_cpu_pct"] < 1000
    assert result["loadgen_busy"] == (result["loadgen_cpu_pct"] > GEN_BUSY_PCT)
    assert 0 <= result["loadgen_cpu_pct_joins"] < 1000
    # The window is on the servers' clock: their GC collections were counted in it.
    assert "window" not in result
    assert result["gc_collections"] >= 0
    return result


@pytest.mark.e2e
def test_raw_storm_counts_every_ready_frame_byte_for_byte(
    node: str, tmp_path: Path
) -> None:
    result = storm("raw", 40, tmp_path)
    assert result["finished"] is True
    assert result["ready"] == 40
    assert result["failures"] == 0
    assert result["closed_early"] == 0
    # raw sends a `ready` and nothing else: one frame per client, 2 bytes of header.
    sizes = [
        2
        + len(
            json.dumps(
                {"type": "ready", "chat_id": "storm", "user": f"u{i}"},
                separators=(",", ":"),
            )
        )
        for i in range(40)
    ]
    assert result["frames_total"] == 40
    assert result["bytes_total"] == result["ready_bytes_total"] == sum(sizes)
    assert result["bytes_per_client"] == round(sum(sizes) / 40, 1)
    assert result["ready_bytes_max"] == max(sizes)
    assert result["first_client_presence_frames"] == 0
    assert result["last_presence_count"] is None
    assert result["tail_s"] == 0
    assert 0 < result["p50_ready_s"] <= result["all_ready_s"] == result["storm_s"]


@pytest.mark.e2e
def test_wschat_storm_waits_for_presence_and_sees_the_final_count(
    node: str, tmp_path: Path
) -> None:
    result = storm("wschat", 40, tmp_path)
    assert result["finished"] is True
    assert result["ready"] == 40
    assert result["failures"] == 0
    assert result["closed_early"] == 0
    # Presence went out on top of the 40 `ready` frames, and the first member's last
    # presence frame counts the whole room, whatever its shape.
    assert result["frames_total"] > 40
    assert result["bytes_total"] > result["ready_bytes_total"] > 0
    assert result["first_client_presence_frames"] >= 1
    assert result["last_presence_count"] == 40
    assert result["storm_s"] >= result["all_ready_s"] > 0
    assert result["tail_s"] == pytest.approx(
        result["storm_s"] - result["all_ready_s"], abs=0.002
    )


@pytest.mark.e2e
def test_a_storm_past_its_timeout_is_reported_not_finished(
    node: str, tmp_path: Path
) -> None:
    # The quiet window (0.5 s) cannot pass inside a 0.2 s timeout.
    result = storm("wschat", 20, tmp_path, "--timeout", "0.2")
    assert result["finished"] is False
    assert result["timeout_s"] == 0.2
    assert result["storm_s"] is None
    assert result["tail_s"] is None


@pytest.mark.e2e
@pytest.mark.parametrize("generator", ["python", "node"])
def test_w1_waits_for_the_filled_room_to_go_quiet(
    generator: str, tmp_path: Path
) -> None:
    if generator == "node" and shutil.which("node") is None:
        pytest.skip("node is not installed")
    if generator == "node":
        assert install_node_deps() is None
    args = ["--n", "30", "--duration", "0.4", "--warmup", "0.1"]
    args += ["--settle-limit", "10"]
    case = Case("w1big", "wschat", "w1", args, loadgen=generator)
    result = run_case(case, tmp_path)
    assert "error" not in result, result.get("error")
    assert result["settled"] is True
    assert result["fill_s"] > 0
    assert 0 < result["settle_s"] < 10
    assert result["deliveries_total"] == result["deliveries_expected"]
    assert result["lost"] == 0


def test_storm_and_w1big_cases_run_beside_the_base_revision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run, "BASE_SRC", ["/tmp/base/src"])
    monkeypatch.setattr(run, "STORM_TIMEOUT", [45.0])
    monkeypatch.setattr(run, "STORM_QUIET", [0.75])
    cases = WORKLOADS["STORM"].cases(False)
    kinds = ("raw", "wschat", "wschat-base", "raw-gcreset", "wschat-gcreset")
    assert [c.label for c in cases] == [
        f"storm-{n}-{k}" for n in (1000, 5000) for k in kinds
    ]
    for c in cases:
        assert c.workload == "storm"
        assert c.loadgen == "node"
        assert c.args[c.args.index("--timeout") + 1] == "45"
        assert c.args[c.args.index("--quiet") + 1] == "0.75"
        assert c.timeout > 45
        assert c.src == ("/tmp/base/src" if c.label.endswith("-base") else None)
        assert c.kind == ("raw" if "-raw" in c.label else "wschat")
        # Both servers once more from the same GC state; the base only as it is.
        assert c.options == (["gc=reset"] if c.label.endswith("-gcreset") else [])
    assert [c.label for c in WORKLOADS["STORM"].cases(True)] == [
        f"storm-1000-{k}" for k in kinds
    ]
    big = WORKLOADS["W1BIG"].cases(False)
    assert [c.label for c in big] == ["w1big-raw", "w1big-wschat", "w1big-wschat-base"]
    for c in big:
        assert c.workload == "w1"
        assert c.args[:2] == ["--n", "5000"]
        assert c.args[c.args.index("--settle-limit") + 1] == "45"
        assert c.timeout > 45


def _storm_result(n: int, storm_s: float | None, per_client: float) -> dict[str, Any]:
    return {
        "n": n,
        "finished": storm_s is not None,
        "storm_s": storm_s,
        "bytes_per_client": per_client,
        "loadgen_cpu_pct": 20.0,
    }


def test_storm_rows_compare_to_raw_to_the_base_and_across_sizes() -> None:
    runs = {
        "storm-1000-raw": [_storm_result(1000, 1.0, 50.0)],
        "storm-1000-wschat": [_storm_result(1000, 1.4, 300.0)],
        "storm-1000-wschat-base": [_storm_result(1000, 6.0, 43_000.0)],
        "storm-5000-raw": [_storm_result(5000, 4.0, 50.0)],
        "storm-5000-wschat": [_storm_result(5000, 8.0, 330.0)],
        "storm-5000-wschat-base": [_storm_result(5000, None, 90_000.0)],
        "storm-1000-raw-gcreset": [_storm_result(1000, 1.0, 50.0)],
        "storm-1000-wschat-gcreset": [_storm_result(1000, 1.6, 300.0)],
    }
    rows = WORKLOADS["STORM"].rows(runs)
    by = {(r["workload"], r["metric"]): r for r in rows}
    time_1000 = by[("STORM N=1000", "time until all ready and quiet s")]
    assert time_1000["ratio"] == pytest.approx(1.4)
    assert time_1000["met"] is True
    assert time_1000["loadgen_cpu_pct"] == 20.0
    assert by[("STORM N=5000", "time until all ready and quiet s")]["met"] is False
    # From the same GC state: its own pair of columns, held to the same target.
    same = by[
        (
            "STORM N=1000",
            "time until all ready and quiet s, both from the same GC state",
        )
    ]
    assert same["medians"] == {"raw-gcreset": 1.0, "wschat-gcreset": 1.6}
    assert (same["subject"], same["base"]) == ("wschat-gcreset", "raw-gcreset")
    assert same["ratio"] == pytest.approx(1.6)
    assert same["met"] is False
    # A size whose same-state runs are missing gets no such rows.
    assert not [
        r for r in rows if r["workload"] == "STORM N=5000" and "GC state" in r["metric"]
    ]
    before = by[
        ("STORM N=1000", "time until all ready and quiet s (this code / --base)")
    ]
    assert before["ratio"] == pytest.approx(1.4 / 6.0)
    unfinished = by[("STORM N=5000", "runs not finished in 60 s (of each column)")]
    assert unfinished["medians"] == {"raw": 0.0, "wschat": 0.0, "wschat-base": 1.0}
    # Bytes O(N): per client at 5,000 over 1,000, finished runs only (the base's
    # 5,000 did not finish: no row for it).
    linear = by[("STORM wschat", "bytes per client, N=5000 / N=1000")]
    assert linear["ratio"] == pytest.approx(1.1)
    assert linear["met"] is True
    assert by[("STORM raw", "bytes per client, N=5000 / N=1000")]["ratio"] == 1.0
    assert ("STORM wschat-base", "bytes per client, N=5000 / N=1000") not in by
    text = markdown(
        {
            "started": "now",
            "quick": True,
            "repeats": 1,
            "machine": {
                "cpus": 2,
                "cpu_model": "x",
                "python": "3",
                "uvicorn": "0",
                "websockets": "0",
            },
            "rows": rows,
        }
    )
    assert "| STORM N=5000 | runs not finished in 60 s (of each column) |" in text
    assert "| STORM wschat | bytes per client, N=5000 / N=1000 |" in text
