"""Smoke test of the benchmark suite: it runs end to end and counts deliveries right.

No timing is asserted anywhere: timings belong in ``benchmarks/results``, not in tests.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import micro
from benchmarks.common import ROOT, SECRET, checkout_env
from benchmarks.run import (
    GEN_BUSY_PCT,
    NODE_LOADGEN,
    WORKLOADS,
    Case,
    choose_loadgen,
    export_src,
    gc_in_window,
    generator_busy,
    generator_cell,
    install_node_deps,
    markdown,
    node_ready,
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


# -- the Node load generator (benchmarks/node) -----------------------------------------
#
# One small round per workload through benchmarks.run, as a full run drives it.


@pytest.fixture(scope="module")
def node() -> str:
    """Skip when Node is missing; install the npm dependencies if they are not yet."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Node load generator cannot run")
    problem = install_node_deps()
    assert problem is None, problem
    return "node"


def node_case(label: str, kind: str, workload: str, args: list[str]) -> Case:
    return Case(label, kind, workload, args, loadgen="node")


def check_node_result(result: dict[str, Any]) -> None:
    assert "error" not in result, result.get("error")
    assert result["loadgen"] == "node"
    assert result["server_errors"] == 0
    assert 0 <= result["loadgen_cpu_pct"] < 1000
    assert result["loadgen_busy"] == (result["loadgen_cpu_pct"] > GEN_BUSY_PCT)


def test_node_generator_signs_tokens_like_the_python_one() -> None:
    # The servers verify with benchmarks.common.SECRET; the Node copy must match.
    source = NODE_LOADGEN.read_text()
    assert f'export const SECRET = "{SECRET}";' in source
    assert (NODE_LOADGEN.parent / "package-lock.json").exists()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("kind", "extra", "client"),
    [
        ("wschat", [], "lean"),
        ("wschat", ["--batch"], "lean"),
        ("raw", ["--client", "ws"], "ws"),
    ],
    ids=["wschat", "batch", "raw-ws-client"],
)
def test_node_w1_delivers_every_message(
    node: str, tmp_path: Path, kind: str, extra: list[str], client: str
) -> None:
    args = ["--n", "20", "--duration", "0.4", "--warmup", "0.1", *extra]
    result = run_case(node_case("w1", kind, "w1", args), tmp_path)
    check_node_result(result)
    assert result["loadgen_client"] == client
    assert result["messages_sent"] > 0
    assert result["deliveries_total"] == result["messages_sent"] * 20
    assert result["deliveries_expected"] == result["deliveries_total"]
    assert result["lost"] == 0
    assert result["closed_early"] == 0
    assert result["deliveries_per_s"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["server_us_per_delivery"] > 0
    assert result["server_rss_mb"] > 0
    # W1's default read moderation: 20 us per member, at least 1 ms; none for
    # batch frames.
    assert result["loadgen_coalesce_us"] == (0 if "--batch" in extra else 1000)


@pytest.mark.e2e
def test_node_deflate_uses_the_ws_client(node: str, tmp_path: Path) -> None:
    args = ["--n", "5", "--duration", "0.3", "--warmup", "0.1"]
    case = node_case("deflate", "wschat", "w1", args)
    case.deflate = True
    result = run_case(case, tmp_path)
    check_node_result(result)
    assert result["loadgen_client"] == "ws"
    assert result["deliveries_total"] == result["messages_sent"] * 5
    # ws inflates on the thread pool: W1 does not moderate its reads then.
    assert result["loadgen_coalesce_us"] == 0


@pytest.mark.e2e
def test_node_w2_slow_client_is_closed_with_1013(node: str, tmp_path: Path) -> None:
    args = ["--n", "5", "--rate", "200", "--body", "8192", "--pause-at", "1"]
    args += ["--duration", "3"]
    case = node_case("w2", "wschat", "w2", args)
    case.options = ["outbox_max_bytes=262144"]
    result = run_case(case, tmp_path)
    check_node_result(result)
    # run.py handed the generator the slow socket with loadgen.py's receive buffer.
    assert result["slow_rcvbuf"].startswith("65536")
    assert result["slow_close_code"] == 1013
    assert result["slow_closed_after_pause_s"] is not None
    assert result["healthy_undelivered"] == 0
    assert result["healthy_closed"] == 0
    assert result["throughput_ratio"] > 0.5
    assert result["rss_mb_max"] >= result["rss_mb_start"] > 0


@pytest.mark.e2e
def test_node_w3_rooms_echo(node: str, tmp_path: Path) -> None:
    args = ["--rooms", "10", "--size", "4", "--window", "1"]
    args += ["--duration", "0.4", "--warmup", "0.1"]
    result = run_case(node_case("w3", "wschat", "w3", args), tmp_path)
    check_node_result(result)
    assert result["clients"] == 40
    assert result["deliveries_per_s"] > 0
    assert result["closed_early"] == 0


@pytest.mark.e2e
def test_node_w4_idle_memory(node: str, tmp_path: Path) -> None:
    result = run_case(
        node_case("w4", "raw", "w4", ["--n", "60", "--size", "10"]), tmp_path
    )
    check_node_result(result)
    assert result["n"] == 60
    assert result["rss_mb_after"] >= result["rss_mb_before"] > 0
    assert result["closed_early"] == 0


@pytest.mark.e2e
def test_node_w5_storm_and_the_servers_gc(node: str, tmp_path: Path) -> None:
    case = node_case("w5", "wschat", "w5", ["--n", "30", "--size", "10"])
    case.options = ["gc=reset"]
    result = run_case(case, tmp_path)
    check_node_result(result)
    assert result["ready"] == 30
    assert result["failures"] == 0
    assert result["failure_kinds"] == []
    assert 0 < result["p50_ready_s"] <= result["all_ready_s"]
    # The window is on the servers' clock: their GC collections were counted in it.
    assert "window" not in result
    assert result["gc_collections"] >= 1


@pytest.mark.e2e
def test_node_churn_loses_nothing(node: str, tmp_path: Path) -> None:
    args = ["--n", "12", "--die", "4", "--rate", "50", "--pause-at", "0.4"]
    args += ["--duration", "0.8"]
    result = run_case(node_case("churn", "wschat", "churn", args), tmp_path)
    check_node_result(result)
    assert result["sent"] > 0
    assert result["lost"] == 0
    assert result["survivors_closed"] == 0
    assert result["sender_closed"] is False


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("kind", "outcome"), [("wschat", "closed-4401"), ("raw", "denied")]
)
def test_node_flood_refuses_junk(
    node: str, tmp_path: Path, kind: str, outcome: str
) -> None:
    args = ["--n", "4", "--rate", "20", "--duration", "0.4"]
    args += ["--flood-rate", "200", "--flood-concurrency", "20"]
    result = run_case(node_case("flood", kind, "flood", args), tmp_path)
    check_node_result(result)
    assert set(result["refusal_outcomes"]) == {outcome}
    assert result["refusals_per_s"] > 0
    assert result["refusal_p99_ms"] > 0
    assert result["undelivered"] == 0
    assert result["clients_closed"] == 0


def test_generator_cpu_is_read_from_every_workloads_result() -> None:
    assert generator_busy({"loadgen_cpu_pct": 85.0}) == {
        "loadgen_cpu_pct": 85.0,
        "loadgen_busy": False,
    }
    assert generator_busy({"loadgen_cpu_pct_during": 85.1})["loadgen_busy"] is True
    # W5: CPU seconds over the storm's time.
    assert generator_busy({"loadgen_cpu_s": 0.5, "all_ready_s": 1.0}) == {
        "loadgen_cpu_pct": 50.0,
        "loadgen_busy": False,
    }
    assert generator_busy({"n": 3}) == {}
    # A closed-loop throughput result also says whether its server was at its limit.
    assert generator_busy(
        {"deliveries_per_s": 1.0, "server_cpu_pct": 79.9, "loadgen_cpu_pct": 10.0}
    ) == {"loadgen_cpu_pct": 10.0, "loadgen_busy": False, "server_idle": True}
    assert generator_busy({"deliveries_per_s": 1.0, "server_cpu_pct": 80.0}) == {
        "server_idle": False
    }


def test_the_table_flags_a_busy_generator() -> None:
    runs = {
        "python": [
            {"deliveries_per_s": 100.0, "loadgen_cpu_pct": 80.0},
            {"deliveries_per_s": 100.0, "loadgen_cpu_pct": 96.0},
        ],
        "node": [
            {"deliveries_per_s": 110.0, "loadgen_cpu_pct": 30.0},
            {"deliveries_per_s": 120.0, "loadgen_cpu_pct": 40.0},
        ],
    }
    busy = row(
        "W",
        "d",
        "deliveries_per_s",
        runs,
        base="python",
        subject="node",
        kinds=("python", "node"),
    )
    assert busy["loadgen_cpu_pct"] == 88.0  # the busier column's median
    assert busy["loadgen_cpu_pct_max"] == 96.0
    assert busy["loadgen_busy"] is True
    assert (
        generator_cell(busy) == "88% (max 96%) BUSY > 85%: may be the generator's limit"
    )
    calm = row("W", "d", "deliveries_per_s", {"node": runs["node"]}, kinds=("node",))
    assert calm["loadgen_busy"] is False
    assert generator_cell(calm) == "35% (max 40%)"
    stalled = [{"loadgen_cpu_pct": 12.0, "server_idle": True}] * 2
    idle = row("W", "d", "deliveries_per_s", {"on": stalled}, kinds=("on",))
    assert generator_cell(idle) == (
        "12% (max 12%); server < 80% of its core in 2 run(s): not at its limit"
    )
    assert "| 35% (max 40%) |" in markdown(
        {
            "started": "now",
            "loadgen": "node",
            "quick": True,
            "repeats": 2,
            "machine": {
                "cpus": 2,
                "cpu_model": "x",
                "python": "3",
                "uvicorn": "0",
                "websockets": "0",
                "load_avg_at_start": (1.0, 1.0, 1.0),
            },
            "rows": [calm],
        }
    )


def test_choose_loadgen() -> None:
    assert choose_loadgen("python") == "python"
    if shutil.which("node") is not None:
        assert choose_loadgen(None) == "node"
        assert node_ready()


def imported_wschat(env: dict[str, str]) -> Path:
    """Where a benchmark server process started with ``env`` imports wschat from."""
    out = subprocess.run(
        [sys.executable, "-c", "import wschat; print(wschat.__file__)"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip()).resolve()


def test_servers_run_this_checkouts_wschat_or_the_one_asked_for(tmp_path: Path) -> None:
    # A worktree's benchmark must not measure the checkout the venv's editable
    # install points at (a W6 comparison once ran main against main that way).
    assert imported_wschat(checkout_env()).is_relative_to(ROOT / "src" / "wschat")
    other = tmp_path / "wschat"
    other.mkdir()
    (other / "__init__.py").write_text("")
    assert imported_wschat(checkout_env(str(tmp_path))) == other / "__init__.py"
