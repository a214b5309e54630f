"""Smoke test of RECONNECT (a room drops at once and reconnects with ``since``), at
tiny N, through ``benchmarks.run`` as a full run drives it, with the Node generator.

No timing is asserted: only that every missed message came back exactly once and in
order, that the comparison without ``since`` recovers nothing, and that the rows build.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks.run import (
    GEN_BUSY_PCT,
    RECONNECT_BACKLOG,
    WORKLOADS,
    Case,
    install_node_deps,
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


def reconnect(n: int, backlog: int, tmp_path: Path, *extra: str) -> dict[str, Any]:
    args = ["--n", str(n), "--backlog", str(backlog), *extra]
    result = run_case(Case("rc", "wschat", "reconnect", args, loadgen="node"), tmp_path)
    assert "error" not in result, result.get("error")
    assert result["loadgen"] == "node"
    assert result["server_errors"] == 0
    assert 0 <= result["loadgen_cpu_pct"] < 1000
    assert result["loadgen_busy"] == (result["loadgen_cpu_pct"] > GEN_BUSY_PCT)
    assert "window" not in result
    assert result["gc_collections"] >= 0
    return result


@pytest.mark.e2e
def test_every_client_recovers_exactly_the_missed_messages(
    node: str, tmp_path: Path
) -> None:
    result = reconnect(30, 12, tmp_path)
    assert result["finished"] is True
    assert result["since"] is True
    assert result["ready"] == result["recovered"] == 30
    assert result["not_recovered"] == 0
    assert result["expected_replayed"] == result["replayed"] == 30 * 12
    assert result["lost"] == result["duplicates"] == result["out_of_order"] == 0
    assert result["failures"] == result["closed_early"] == 0
    # One `ready` and 12 messages per client, nothing else (presence is count-only
    # or coalesced: at most a few frames more).
    assert result["frames_total"] >= 30 * 13
    assert 0 < result["p50_recover_s"] <= result["recover_s"]


@pytest.mark.e2e
def test_without_since_nothing_is_replayed(node: str, tmp_path: Path) -> None:
    result = reconnect(20, 5, tmp_path, "--since", "0")
    assert result["finished"] is True
    assert result["since"] is False
    assert result["ready"] == 20
    assert result["recovered"] == 0
    assert result["not_recovered"] == 20
    assert result["expected_replayed"] == result["replayed"] == 0
    assert result["lost"] == result["duplicates"] == 0
    assert result["recover_s"] == result["all_ready_s"]


def test_reconnect_cases_and_rows() -> None:
    cases = WORKLOADS["RECONNECT"].cases(False)
    assert [c.label for c in cases] == ["reconnect-wschat", "reconnect-wschat-nosince"]
    for c in cases:
        assert c.kind == "wschat"
        assert c.workload == "reconnect"
        assert c.loadgen == "node"
        assert c.args[:4] == ["--n", "1000", "--backlog", "50"]
    assert RECONNECT_BACKLOG == 50
    assert cases[1].args[-2:] == ["--since", "0"]
    assert WORKLOADS["RECONNECT"].cases(True)[0].args[:2] == ["--n", "200"]

    def result(recover_s: float, replayed: int) -> dict[str, Any]:
        return {
            "n": 1000,
            "recover_s": recover_s,
            "replayed": replayed,
            "lost": 0,
            "duplicates": 0,
            "loadgen_cpu_pct": 30.0,
        }

    runs = {
        "reconnect-wschat": [result(2.0, 50_000), result(3.0, 50_000)],
        "reconnect-wschat-nosince": [result(1.0, 0), result(1.0, 0)],
    }
    rows = WORKLOADS["RECONNECT"].rows(runs)
    by = {r["key"]: r for r in rows}
    assert rows[0]["workload"] == "RECONNECT N=1000, 50 missed"
    assert by["recover_s"]["medians"] == {"wschat-nosince": 1.0, "wschat": 2.5}
    assert by["recover_s"]["ratio"] == pytest.approx(2.5)
    assert by["lost"]["medians"]["wschat"] == 0
    assert by["recover_s"]["loadgen_cpu_pct"] == 30.0
