"""Smoke test of the benchmark suite: it runs end to end and counts deliveries right.

No timing is asserted anywhere: timings belong in ``benchmarks/results``, not in tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks import micro
from benchmarks.run import (
    WORKLOADS,
    Case,
    export_src,
    gc_in_window,
    markdown,
    row,
    run_case,
)


def test_micro_benchmark_runs() -> None:
    result = micro.broadcast(members=500, rounds=2)
    assert result["members"] == 500
    assert result["us_per_recipient"] > 0
    drained = micro.writer(frames=50, rounds=2)
    assert drained["us_per_frame"] > 0
    batched = micro.writer(frames=50, rounds=2, batch=True)
    assert batched["batch"] is True
    refused = micro.refusal(count=20, rounds=1)
    assert refused["malformed_us"] > 0
    assert refused["bad_signature_us"] > 0
    parsed = micro.parse(rounds=1, repeat=1)
    assert set(parsed) >= {"chat", "objects_60k"}
    assert all(kind["us_per_parse"] > 0 for kind in parsed.values())


@pytest.mark.e2e
@pytest.mark.parametrize("batch", [False, True], ids=["frames", "batch"])
def test_w1_round_delivers_every_message(tmp_path: Path, batch: bool) -> None:
    args = ["--n", "20", "--duration", "0.5", "--warmup", "0.2"]
    case = Case("w1-smoke", "wschat", "w1", args + (["--batch"] if batch else []))
    result = run_case(case, tmp_path)
    assert "error" not in result, result.get("error")
    assert result["messages_sent"] > 0
    assert result["deliveries_total"] == result["deliveries_expected"]
    assert result["deliveries_total"] == result["messages_sent"] * 20
    assert result["lost"] == 0
    assert result["closed_early"] == 0
    assert result["server_errors"] == 0


@pytest.mark.e2e
def test_raw_baseline_and_table(tmp_path: Path) -> None:
    args = ["--n", "10", "--duration", "0.3", "--warmup", "0.1"]
    runs = {
        kind: [run_case(Case(f"w1-{kind}", kind, "w1", args), tmp_path)]
        for kind in ("raw", "wschat")
    }
    for kind, (result,) in runs.items():
        assert result["deliveries_total"] == result["deliveries_expected"], kind
    line = row("W1", "deliveries/s", "deliveries_per_s", runs, kinds=("raw", "wschat"))
    assert line["ratio"] is not None
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
            "rows": [line],
        }
    )
    assert "| W1 | deliveries/s |" in text


def test_gc_in_window_counts_only_collections_that_began_inside() -> None:
    collections = [(0.5, 0.001, 2), (1.0, 0.002, 0), (1.5, 0.040, 2), (3.0, 0.05, 2)]
    assert gc_in_window(collections, 1.0, 2.0) == {
        "gc_collections": 2,
        "gc_ms": 42.0,
        "gc_full": 1,
        "gc_full_ms": 40.0,
    }


@pytest.mark.e2e
def test_connect_storm_reports_the_servers_gc(tmp_path: Path) -> None:
    # gc=reset: one full collection before serving, so the storm's own are counted.
    case = Case("w5-smoke", "wschat", "w5", ["--n", "30", "--size", "10"])
    case.options = ["gc=reset"]
    result = run_case(case, tmp_path)
    assert "error" not in result, result.get("error")
    assert result["ready"] == 30
    assert result["failures"] == 0
    assert "window" not in result
    assert result["gc_collections"] >= 1  # 30 connections allocate past gen0's 700
    assert result["gc_ms"] >= result["gc_full_ms"] >= 0
    assert (tmp_path / "w5-smoke.gc.json").exists()


@pytest.mark.e2e
def test_flood_round_refuses_junk_and_keeps_the_room(tmp_path: Path) -> None:
    args = ["--n", "5", "--rate", "20", "--duration", "0.6"]
    args += ["--flood-rate", "200", "--flood-concurrency", "20"]
    result = run_case(Case("flood-smoke", "wschat", "flood", args), tmp_path)
    assert "error" not in result, result.get("error")
    assert result["refusals_per_s"] > 0
    # Every junk handshake was accepted and closed with 4401 (none lost).
    assert set(result["refusal_outcomes"]) == {"closed-4401"}
    for key in ("p99_before_ms", "p99_during_ms", "refusal_p99_ms"):
        assert result[key] is not None, key
        assert result[key] > 0, key
    assert result["undelivered"] == 0
    assert result["clients_closed"] == 0
    assert result["server_errors"] == 0
    # The refusals of one reason made one log line, not one each.
    assert result["server_log_lines"] == 1


@pytest.mark.e2e
def test_flood_against_another_revision_and_the_table(tmp_path: Path) -> None:
    src = export_src("HEAD", tmp_path / "base")
    assert (src / "wschat" / "__init__.py").exists()
    args = ["--n", "3", "--rate", "20", "--duration", "0.4"]
    args += ["--flood-rate", "0", "--flood-concurrency", "4"]
    runs = {
        "flood-max-raw": [run_case(Case("f-raw", "raw", "flood", args), tmp_path)],
        "flood-max-wschat-base": [
            run_case(Case("f-base", "wschat", "flood", args, src=str(src)), tmp_path)
        ],
    }
    assert set(runs["flood-max-raw"][0]["refusal_outcomes"]) == {"denied"}
    assert runs["flood-max-wschat-base"][0]["refusals_per_s"] > 0
    rows = WORKLOADS["FLOOD"].rows(runs)
    assert [r["metric"] for r in rows][:2] == ["refusals/s", "server CPU us/refusal"]
    assert all(r["base"] == "wschat-base" for r in rows)
    assert "| FLOOD as fast as served | refusals/s |" in markdown(
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
