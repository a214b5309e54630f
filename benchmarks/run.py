"""Run the benchmark suite: ``python -m benchmarks.run [--only W1] [--quick]``.

Every workload runs ``raw``, ``naive`` and ``wschat`` side by side in the same run,
interleaved repeat by repeat, so that ratios compare numbers taken minutes apart on the
same machine. Servers run pinned to core 0, load generators to core 1. Results go to
``benchmarks/results/<timestamp>.json`` and ``.md``: medians of the repeats, their
spread (min-max), and for wschat the median of its per-repeat ratio to ``raw``.

The load generator is ``benchmarks/node/loadgen.mjs`` (Node) when ``node`` is on the
PATH, else ``benchmarks/loadgen.py``; ``--loadgen python|node`` chooses. The Node one
needs its npm dependencies, installed on first use (``npm ci --prefix
benchmarks/node``). Every result says how busy the generator was
(``loadgen_cpu_pct``); above :data:`GEN_BUSY_PCT` the measurement may be the
generator's limit rather than the server's, and the table flags it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import LOADGEN_CORE, ROOT, SERVER_CORE, pinned, server

RESULTS = ROOT / "benchmarks" / "results"
KINDS = ("raw", "naive", "wschat")
NODE_DIR = ROOT / "benchmarks" / "node"
NODE_LOADGEN = NODE_DIR / "loadgen.mjs"
GENERATORS = ("python", "node")
#: A load generator busier than this (% of its core) may be what limits the
#: measurement: the table flags such rows.
GEN_BUSY_PCT = 85.0
#: In a closed-loop throughput workload (W1, W3) a server below this (% of its core)
#: was not at its limit either: something else held the loop back (a stalled
#: generator, the loop's window, other work on the machine). The table says so.
SERVER_IDLE_PCT = 80.0
#: The run's load generator (``--loadgen``); a case may name another.
LOADGEN: list[str] = ["python"]
#: ``npm ci`` from the lock file, from the npm cache when it holds the packages.
NPM_CI_FLAGS = ("--prefer-offline", "--no-audit", "--no-fund")
#: W2's slow client: its receive buffer, as ``loadgen.py`` sets it.
SLOW_RCVBUF = 65536
#: ``--base REV``: the ``src`` of that revision, for before/after cases (W1, W4, W5,
#: FLOOD, STORM, W1BIG), run interleaved with the others in the same repeats.
BASE_SRC: list[str] = []
#: STORM's sizes, and how long one storm may take before it counts as not finished
#: (``--storm-timeout``): wschat before coalesced presence did not finish 5,000
#: joins in 180 s.
STORM_SIZES = (1000, 5000)
STORM_TIMEOUT: list[float] = [60.0]
#: STORM: the server has gone quiet once no client received anything for this long
#: (``--storm-quiet``); it must exceed any interval at which presence is coalesced.
STORM_QUIET: list[float] = [0.5]
#: W1BIG: W1 in one room of this many, after the room filled and went quiet (the
#: generator waits up to ``--storm-timeout`` for that).
W1BIG_N = 5000


@dataclass
class Case:
    """One server kind under one workload setting."""

    label: str
    kind: str
    workload: str
    args: list[str]
    options: list[str] = field(default_factory=list)
    deflate: bool = False
    #: Import wschat from this ``src`` directory (``--base``: the code before).
    src: str | None = None
    #: ``python`` or ``node``; None: the run's (``--loadgen``).
    loadgen: str | None = None
    #: Seconds the load generator may take before the runner gives up on it.
    timeout: float = 300.0


@dataclass
class Workload:
    """A workload: its cases, how to summarise them, and its targets."""

    name: str
    title: str
    cases: Callable[[bool], list[Case]]
    rows: Callable[[dict[str, list[dict[str, Any]]]], list[dict[str, Any]]]


# -- load generators -----------------------------------------------------------------


def node_ready() -> bool:
    """Whether the Node load generator can run: ``node`` and its npm dependencies."""
    return (
        shutil.which("node") is not None and (NODE_DIR / "node_modules" / "ws").is_dir()
    )


def install_node_deps() -> str | None:
    """Install the Node generator's npm dependencies if they are missing.

    ``npm ci`` from the committed lock file, preferring the npm cache (no download
    when it holds them). Returns None when ready, else why not.
    """
    if shutil.which("node") is None:
        return "node is not installed"
    if node_ready():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed"
    print("installing the Node load generator's dependencies (npm ci)...", flush=True)
    proc = subprocess.run(
        [npm, "ci", "--prefix", str(NODE_DIR), *NPM_CI_FLAGS],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not node_ready():
        return f"npm ci failed: {(proc.stderr or proc.stdout).strip()[-500:]}"
    return None


def choose_loadgen(requested: str | None) -> str:
    """``--loadgen``: the one asked for, else Node when it can run, else Python."""
    if requested == "python":
        return "python"
    problem = install_node_deps()
    if problem is None:
        return "node"
    if requested == "node":
        raise SystemExit(f"--loadgen node: {problem}")
    print(f"using the Python load generator ({problem})", flush=True)
    return "python"


def loadgen_argv(generator: str, workload: str) -> list[str]:
    """The command line of ``generator`` running ``workload``."""
    if generator == "node":
        return [shutil.which("node") or "node", str(NODE_LOADGEN), workload]
    return [sys.executable, "-m", "benchmarks.loadgen", workload]


def slow_socket() -> socket.socket:
    """W2's slow client socket for the Node generator, which cannot set SO_RCVBUF:
    unconnected, with the receive buffer ``loadgen.py`` gives its slow client."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    sock.set_inheritable(True)
    return sock


def generator_busy(result: dict[str, Any]) -> dict[str, Any]:
    """``loadgen_cpu_pct`` for every workload and whether it was above the limit;
    for closed-loop throughput workloads, whether the server was below its own."""
    pct = result.get("loadgen_cpu_pct", result.get("loadgen_cpu_pct_during"))
    if pct is None and isinstance(result.get("loadgen_cpu_s"), (int, float)):
        window = result.get("all_ready_s")
        if isinstance(window, (int, float)) and window > 0:
            pct = round(100 * result["loadgen_cpu_s"] / window, 1)
    out: dict[str, Any] = {}
    if isinstance(pct, (int, float)):
        out = {"loadgen_cpu_pct": pct, "loadgen_busy": pct > GEN_BUSY_PCT}
    server = result.get("server_cpu_pct")
    if "deliveries_per_s" in result and isinstance(server, (int, float)):
        out["server_idle"] = server < SERVER_IDLE_PCT
    return out


# -- running -------------------------------------------------------------------------


def run_case(case: Case, log_dir: Path) -> dict[str, Any]:
    """Start the case's server, run its load generator, return the generator's JSON."""
    log_path = log_dir / f"{case.label}.log"
    gc_path = log_dir / f"{case.label}.gc.json"
    gc_path.unlink(missing_ok=True)
    log_before = log_path.read_text(errors="replace") if log_path.exists() else ""
    started = time.monotonic()
    with server(
        case.kind,
        deflate=case.deflate,
        log_path=log_path,
        options=case.options,
        gc_log=gc_path,
        pythonpath=case.src,
    ) as (pid, port):
        generator = case.loadgen or LOADGEN[0]
        argv = loadgen_argv(generator, case.workload)
        argv += ["--port", str(port), "--pid", str(pid), *case.args]
        if case.deflate:
            argv.append("--deflate")
        with contextlib.ExitStack() as stack:
            fds: tuple[int, ...] = ()
            if generator == "node" and case.workload == "w2":
                sock = stack.enter_context(slow_socket())
                fds = (sock.fileno(),)
                argv += ["--rcvbuf-fd", str(sock.fileno())]
            proc = subprocess.run(
                pinned(LOADGEN_CORE, argv),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=case.timeout,
                check=False,
                pass_fds=fds,
            )
    lines = proc.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"error": (proc.stderr or proc.stdout)[-2000:]}
    result.setdefault("loadgen", generator)
    result.update(generator_busy(result))
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    result["server_errors"] = sum(
        ("ERROR" in line or "Traceback" in line) for line in log.splitlines()
    )
    # This run's lines only (the file collects every repeat of the case).
    result["server_log_lines"] = len(log[len(log_before) :].splitlines())
    result["wall_s"] = round(time.monotonic() - started, 1)
    window = result.pop("window", None)
    if window is not None and gc_path.exists():
        result.update(gc_in_window(json.loads(gc_path.read_text()), *window))
    return result


def gc_in_window(
    collections: Sequence[Sequence[float]], start: float, end: float
) -> dict[str, Any]:
    """The server's cyclic-GC collections that began inside a workload's window.

    Returns collections and milliseconds, all and full (generation 2) ones.
    """
    inside = [(s, d, g) for s, d, g in collections if start <= s <= end]
    full = [d for _, d, g in inside if g == 2]
    return {
        "gc_collections": len(inside),
        "gc_ms": round(sum(d for _, d, _ in inside) * 1000, 1),
        "gc_full": len(full),
        "gc_full_ms": round(sum(full) * 1000, 1),
    }


def export_src(rev: str, into: Path) -> Path:
    """Write ``src/`` as of git revision ``rev`` under ``into``; return its path."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def run_micro(quick: bool) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.micro"] + (["--quick"] if quick else [])
    proc = subprocess.run(
        pinned(SERVER_CORE, argv), cwd=ROOT, capture_output=True, text=True, check=False
    )
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        return {"error": proc.stderr[-2000:]}


def run_w6(quick: bool) -> dict[str, Any] | None:
    """The two-process Redis workload, when ``benchmarks/w6_redis.py`` exists."""
    if not (ROOT / "benchmarks" / "w6_redis.py").exists():
        return None
    argv = [sys.executable, "-m", "benchmarks.w6_redis"] + (
        ["--quick"] if quick else []
    )
    proc = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        return {"error": (proc.stderr or proc.stdout)[-2000:]}


# -- statistics ----------------------------------------------------------------------


def values(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs if isinstance(r.get(key), (int, float))]


def med(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    vs = values(runs, key)
    return statistics.median(vs) if vs else None


def spread(runs: Sequence[dict[str, Any]], key: str) -> str:
    vs = values(runs, key)
    if len(vs) < 2:
        return ""
    return f"{_fmt(min(vs))}-{_fmt(max(vs))}"


def ratios(
    a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], key: str
) -> list[float]:
    """Per-repeat ratios a/b (same repeat index: measured minutes apart)."""
    out = []
    for x, y in zip(a, b, strict=False):
        vx, vy = x.get(key), y.get(key)
        if isinstance(vx, (int, float)) and isinstance(vy, (int, float)) and vy:
            out.append(vx / vy)
    return out


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def row(
    workload: str,
    metric: str,
    key: str,
    runs: dict[str, list[dict[str, Any]]],
    *,
    target: str = "",
    check: Callable[[float], bool] | None = None,
    base: str = "raw",
    kinds: Sequence[str] = KINDS,
    subject: str = "wschat",
) -> dict[str, Any]:
    """One line of the table: medians, spreads, and ``subject``'s ratio to ``base``."""
    rs = ratios(runs.get(subject, []), runs.get(base, []), key)
    ratio = statistics.median(rs) if rs else None
    met = None if check is None or ratio is None else check(ratio)
    gen_medians = [m for k in kinds if (m := med(runs.get(k, []), "loadgen_cpu_pct"))]
    gen_all = [v for k in kinds for v in values(runs.get(k, []), "loadgen_cpu_pct")]
    return {
        "workload": workload,
        "metric": metric,
        "key": key,
        "medians": {k: med(runs.get(k, []), key) for k in kinds},
        "spreads": {k: spread(runs.get(k, []), key) for k in kinds},
        "subject": subject,
        "base": base,
        "ratio": ratio,
        "ratio_spread": f"{min(rs):.2f}-{max(rs):.2f}" if len(rs) > 1 else "",
        "target": target,
        "met": met,
        # The busiest load generator of the row's columns: the median of its
        # repeats, the busiest single repeat, and whether that one was above the
        # limit (the measurement may then be the generator's limit).
        "loadgen_cpu_pct": max(gen_medians) if gen_medians else None,
        "loadgen_cpu_pct_max": max(gen_all) if gen_all else None,
        "loadgen_busy": bool(gen_all) and max(gen_all) > GEN_BUSY_PCT,
        "server_idle_runs": sum(
            bool(r.get("server_idle")) for k in kinds for r in runs.get(k, [])
        ),
    }


def generator_cell(r: dict[str, Any]) -> str:
    """The table's generator column: "41% (max 48%)", flagged when above the limit."""
    if r.get("loadgen_cpu_pct") is None:
        return ""
    cell = f"{r['loadgen_cpu_pct']:.0f}% (max {r['loadgen_cpu_pct_max']:.0f}%)"
    if r.get("loadgen_busy"):
        cell += f" BUSY > {GEN_BUSY_PCT:.0f}%: may be the generator's limit"
    if r.get("server_idle_runs"):
        cell += (
            f"; server < {SERVER_IDLE_PCT:.0f}% of its core in "
            f"{r['server_idle_runs']} run(s): not at its limit"
        )
    return cell


# -- workloads -----------------------------------------------------------------------


def _w1_cases(quick: bool) -> list[Case]:
    sizes = (100, 1000)
    time_args = ["--duration", "1.5", "--warmup", "0.5"] if quick else []
    cases = []
    for n in sizes:
        for kind in KINDS:
            cases.append(
                Case(f"w1-{n}-{kind}", kind, "w1", ["--n", str(n), *time_args])
            )
        cases.append(
            Case(
                f"w1-{n}-wschat-batch",
                "wschat",
                "w1",
                ["--n", str(n), "--batch", *time_args],
            )
        )
        if BASE_SRC:
            cases.append(_base_case(f"w1-{n}", "w1", ["--n", str(n), *time_args]))
    return cases


def _base_case(prefix: str, workload: str, args: list[str]) -> Case:
    """``--base REV``: wschat as of that revision, run beside every other case."""
    return Case(f"{prefix}-wschat-base", "wschat", workload, args, src=BASE_SRC[0])


def _before_after(
    workload: str, metric: str, key: str, by: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """With ``--base``: this code against the base revision, same run, interleaved."""
    if not by.get("wschat-base"):
        return []
    return [
        row(
            workload,
            f"{metric} (this code / --base)",
            key,
            by,
            base="wschat-base",
            kinds=("wschat-base", "wschat"),
        )
    ]


def _w1_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for n, goal in ((1000, 0.85), (100, 0.80)):
        by = {
            k: runs.get(f"w1-{n}-{k}", [])
            for k in (*KINDS, "wschat-batch", "wschat-base")
        }
        kinds = (*KINDS, "wschat-batch")
        out.append(
            row(
                f"W1 N={n}",
                "deliveries/s",
                "deliveries_per_s",
                by,
                target=f">= {goal}x raw",
                check=lambda r, g=goal: r >= g,  # type: ignore[misc]
                kinds=kinds,
            )
        )
        out.append(
            row(
                f"W1 N={n}",
                "server CPU us/delivery",
                "server_us_per_delivery",
                by,
                target="<= 1.2x raw",
                check=lambda r: r <= 1.2,
                kinds=kinds,
            )
        )
        for key, metric in (
            ("p50_ms", "p50 latency ms"),
            ("p99_ms", "p99 latency ms"),
            ("server_cpu_pct", "server CPU %"),
            ("loadgen_cpu_pct", "load generator CPU %"),
        ):
            out.append(row(f"W1 N={n}", metric, key, by, kinds=kinds))
        out.append(
            row(
                f"W1 N={n}",
                "batch: deliveries/s",
                "deliveries_per_s",
                by,
                target="> 1x raw",
                check=lambda r: r > 1.0,
                kinds=kinds,
                subject="wschat-batch",
            )
        )
        out += _before_after(f"W1 N={n}", "deliveries/s", "deliveries_per_s", by)
        out += _before_after(
            f"W1 N={n}", "server CPU us/delivery", "server_us_per_delivery", by
        )
    return out


def _w2_cases(quick: bool) -> list[Case]:
    args = ["--n", "100", "--rate", "50", "--body", "8192", "--pause-at", "2"]
    args += ["--duration", "6" if quick else "20"]
    # 1 MiB instead of the default 4 MiB outbox: the kernel's socket buffers absorb
    # ~4 MB first, and the default cap would only fill after the 20 s run.
    return [
        Case(
            f"w2-{k}",
            k,
            "w2",
            args,
            options=["outbox_max_bytes=1048576"] if k == "wschat" else [],
        )
        for k in KINDS
    ]


def _w2_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    by = {k: runs.get(f"w2-{k}", []) for k in KINDS}
    out = [
        row(
            "W2 slow consumer",
            "healthy throughput after/before",
            "throughput_ratio",
            by,
            target=">= 0.95 (own)",
        ),
        row("W2 slow consumer", "healthy p99 before ms", "p99_before_ms", by),
        row("W2 slow consumer", "healthy p99 after ms", "p99_after_ms", by),
        row(
            "W2 slow consumer",
            "healthy p99 after/before",
            "p99_ratio",
            by,
            target="<= 1.5 (own)",
        ),
        row("W2 slow consumer", "healthy undelivered", "healthy_undelivered", by),
        row(
            "W2 slow consumer",
            "slow client closed after pause s",
            "slow_closed_after_pause_s",
            by,
        ),
        row("W2 slow consumer", "slow client close code", "slow_close_code", by),
        row("W2 slow consumer", "server RSS max MB", "rss_mb_max", by),
        row("W2 slow consumer", "server RSS end MB", "rss_mb_end", by),
    ]
    for r in out:
        r["ratio"] = None  # own before/after ratios; not compared to raw
    return out


def _w3_cases(quick: bool) -> list[Case]:
    rooms = "100" if quick else "500"
    time_args = ["--duration", "1.5", "--warmup", "0.5"] if quick else []
    args = ["--rooms", rooms, "--size", "4", "--window", "1", *time_args]
    return [Case(f"w3-{k}", k, "w3", args) for k in KINDS]


def _w3_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    by = {k: runs.get(f"w3-{k}", []) for k in KINDS}
    return [
        row(
            "W3 many rooms",
            "deliveries/s",
            "deliveries_per_s",
            by,
            target=">= 0.75x raw",
            check=lambda r: r >= 0.75,
        ),
        row("W3 many rooms", "server CPU us/delivery", "server_us_per_delivery", by),
        row("W3 many rooms", "load generator CPU %", "loadgen_cpu_pct", by),
    ]


def _w4_cases(quick: bool) -> list[Case]:
    sizes = (1000,) if quick else (1000, 5000)
    cases = [
        Case(f"w4-{n}-{k}", k, "w4", ["--n", str(n), "--size", "10"])
        for n in sizes
        for k in KINDS
    ]
    if BASE_SRC:
        cases += [
            _base_case(f"w4-{n}", "w4", ["--n", str(n), "--size", "10"]) for n in sizes
        ]
    return cases


def _w4_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for n in (1000, 5000):
        by = {k: runs.get(f"w4-{n}-{k}", []) for k in (*KINDS, "wschat-base")}
        if not any(by.values()):
            continue
        out.append(
            row(
                f"W4 idle N={n}",
                "KiB per connection",
                "kib_per_connection",
                by,
                target="<= 1.3x raw",
                check=lambda r: r <= 1.3,
            )
        )
        out += _before_after(
            f"W4 idle N={n}", "KiB per connection", "kib_per_connection", by
        )
    return out


#: W5 diagnosis: the same storm without presence frames and without the cyclic GC.
_W5_DIAGNOSIS = {
    "raw-nogc": ("raw", ["gc=off"]),
    "wschat-nopresence": ("wschat", ["presence=0"]),
    "wschat-nogc": ("wschat", ["gc=off"]),
    "wschat-nopresence-nogc": ("wschat", ["presence=0", "gc=off"]),
    "raw-gcreset": ("raw", ["gc=reset"]),
    "wschat-gcreset": ("wschat", ["gc=reset"]),
}


def _w5_cases(quick: bool) -> list[Case]:
    n = "300" if quick else "1000"
    args = ["--n", n, "--size", "10"]
    cases = [Case(f"w5-{k}", k, "w5", args) for k in KINDS]
    if BASE_SRC:
        cases.append(_base_case("w5", "w5", args))
    for label, (kind, options) in _W5_DIAGNOSIS.items():
        cases.append(Case(f"w5-{label}", kind, "w5", args, options=options))
    return cases


def _w5_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    by = {k: runs.get(f"w5-{k}", []) for k in (*KINDS, "wschat-base")}
    return [
        *_before_after("W5 connect storm", "time until all ready s", "all_ready_s", by),
        row(
            "W5 connect storm",
            "time until all ready s",
            "all_ready_s",
            by,
            target="<= 1.3x raw",
            check=lambda r: r <= 1.3,
        ),
        row("W5 connect storm", "failures", "failures", by, target="0"),
        row("W5 connect storm", "server CPU s", "server_cpu_s", by),
        row("W5 connect storm", "server GC ms in the storm", "gc_ms", by),
        row("W5 connect storm", "full GC collections in the storm", "gc_full", by),
        row("W5 connect storm", "full GC ms in the storm", "gc_full_ms", by),
        *_w5_diagnosis(runs),
    ]


def _w5_diagnosis(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Where W5's time goes: wschat without presence (the frames raw sends, one
    ``ready`` each), without presence and GC against raw without GC, and both
    servers starting the storm from the same GC state (``gc=reset``)."""
    kinds = ("raw", "wschat", *_W5_DIAGNOSIS)
    by = {k: runs.get(f"w5-{k}", []) for k in kinds}
    like_for_like = row(
        "W5 diagnosis",
        "all ready s, same frames as raw",
        "all_ready_s",
        by,
        kinds=kinds,
        subject="wschat-nopresence",
        target="(<= 1.3x raw)",
        check=lambda r: r <= 1.3,
    )
    # metric, key, base, subject
    others = [
        (
            "all ready s, no GC either",
            "all_ready_s",
            "raw-nogc",
            "wschat-nopresence-nogc",
        ),
        (
            "all ready s, both from the same GC state",
            "all_ready_s",
            "raw-gcreset",
            "wschat-gcreset",
        ),
        ("server GC ms in the storm", "gc_ms", "raw", "wschat-nopresence"),
        ("full GC collections in the storm", "gc_full", "raw", "wschat-nopresence"),
        (
            "full GC collections, both from the same GC state",
            "gc_full",
            "raw-gcreset",
            "wschat-gcreset",
        ),
    ]
    return [like_for_like] + [
        row("W5 diagnosis", metric, key, by, kinds=kinds, base=base, subject=subject)
        for metric, key, base, subject in others
    ]


def _churn_cases(quick: bool) -> list[Case]:
    args = ["--n", "100", "--rate", "50", "--die", "10", "--pause-at", "2"]
    args += ["--duration", "4" if quick else "6"]
    return [Case(f"churn-{k}", k, "churn", args) for k in KINDS]


def _churn_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    by = {k: runs.get(f"churn-{k}", []) for k in KINDS}
    out = [
        row("Churn", "survivors closed", "survivors_closed", by, target="0"),
        row("Churn", "messages lost by survivors", "lost", by, target="0"),
        row("Churn", "server ERROR lines", "server_errors", by, target="0"),
    ]
    for r in out:
        r["ratio"] = None
    return out


def _deflate_cases(quick: bool) -> list[Case]:
    time_args = ["--duration", "1.5", "--warmup", "0.5"] if quick else []
    cases = []
    for kind in ("raw", "wschat"):
        for deflate in (False, True):
            label = f"deflate-{kind}-{'on' if deflate else 'off'}"
            # loadgen.py: the Node generator's permessage-deflate client (ws,
            # inflating on the thread pool) is slower than the servers.
            cases.append(
                Case(
                    label,
                    kind,
                    "w1",
                    ["--n", "100", *time_args],
                    deflate=deflate,
                    loadgen="python",
                )
            )
    return cases


def _deflate_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for kind in ("raw", "wschat"):
        by = {
            "off": runs.get(f"deflate-{kind}-off", []),
            "on": runs.get(f"deflate-{kind}-on", []),
        }
        out.append(
            row(
                f"Deflate ({kind}, W1 N=100)",
                "server CPU us/delivery",
                "server_us_per_delivery",
                by,
                base="off",
                subject="on",
                kinds=("off", "on"),
                target="(cost of deflate: on/off)",
            )
        )
        out.append(
            row(
                f"Deflate ({kind}, W1 N=100)",
                "deliveries/s",
                "deliveries_per_s",
                by,
                base="off",
                subject="on",
                kinds=("off", "on"),
            )
        )
    return out


def _flood_cases(quick: bool) -> list[Case]:
    duration = "2" if quick else "4"
    base = ["--n", "20", "--rate", "50", "--duration", duration]
    scenarios = {
        "1000": ["--flood-rate", "1000", "--flood-concurrency", "200"],
        "max": ["--flood-rate", "0", "--flood-concurrency", "32"],
    }
    cases = []
    for name, flood_args in scenarios.items():
        args = base + flood_args
        cases.append(Case(f"flood-{name}-raw", "raw", "flood", args))
        if BASE_SRC:
            cases.append(
                Case(
                    f"flood-{name}-wschat-base",
                    "wschat",
                    "flood",
                    args,
                    src=BASE_SRC[0],
                )
            )
        cases.append(Case(f"flood-{name}-wschat", "wschat", "flood", args))
        # uvicorn's own INFO lines (two per refused socket), which wschat cannot
        # throttle: what they cost on top.
        cases.append(
            Case(
                f"flood-{name}-wschat-uvinfo",
                "wschat",
                "flood",
                args,
                options=["log_level=info"],
            )
        )
        # What a deployment without browsers can choose: refusals as HTTP 401,
        # before accept (no 101, no close frame, no closing handshake).
        cases.append(
            Case(
                f"flood-{name}-wschat-denials",
                "wschat",
                "flood",
                args,
                options=["http_denials=1"],
            )
        )
    return cases


def _flood_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    kinds = ("raw", "wschat-base", "wschat", "wschat-uvinfo", "wschat-denials")
    out = []
    for name, title in (("1000", "1,000 junk/s offered"), ("max", "as fast as served")):
        by = {k: runs.get(f"flood-{name}-{k}", []) for k in kinds}
        if not any(by.values()):
            continue
        base = "wschat-base" if by["wschat-base"] else "raw"
        for metric, key in (
            ("refusals/s", "refusals_per_s"),
            ("server CPU us/refusal", "server_us_per_refusal"),
            ("established p99 before flood ms", "p99_before_ms"),
            ("established p99 during flood ms", "p99_during_ms"),
            ("established p50 during flood ms", "p50_during_ms"),
            ("refusal p99 ms", "refusal_p99_ms"),
            ("server log lines", "server_log_lines"),
        ):
            out.append(row(f"FLOOD {title}", metric, key, by, base=base, kinds=kinds))
    return out


def _loadgen_cases(quick: bool) -> list[Case]:
    """W1 against ``raw`` and ``wschat`` with both generators, interleaved."""
    time_args = ["--duration", "1.5", "--warmup", "0.5"] if quick else []
    return [
        Case(
            f"gen-{n}-{kind}-{gen}",
            kind,
            "w1",
            ["--n", str(n), *time_args],
            loadgen=gen,
        )
        for n in (100, 1000)
        for kind in ("raw", "wschat")
        for gen in GENERATORS
    ]


def _loadgen_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for n in (100, 1000):
        raw = {g: runs.get(f"gen-{n}-raw-{g}", []) for g in GENERATORS}
        if not any(raw.values()):
            continue
        title = f"Generators, W1 N={n}"
        for metric, key in (
            ("raw: deliveries/s", "deliveries_per_s"),
            ("raw: generator CPU %", "loadgen_cpu_pct"),
            ("raw: server CPU %", "server_cpu_pct"),
            ("raw: server CPU us/delivery", "server_us_per_delivery"),
            ("raw: p50 latency ms", "p50_ms"),
        ):
            out.append(
                row(
                    title,
                    metric,
                    key,
                    raw,
                    base="python",
                    subject="node",
                    kinds=GENERATORS,
                )
            )
        wschat = {g: runs.get(f"gen-{n}-wschat-{g}", []) for g in GENERATORS}
        out.append(
            row(
                title,
                "wschat: generator CPU %",
                "loadgen_cpu_pct",
                wschat,
                base="python",
                subject="node",
                kinds=GENERATORS,
            )
        )
        for g in GENERATORS:
            by = {"raw": raw[g], "wschat": wschat[g]}
            out.append(
                row(
                    title,
                    f"{g} generator: deliveries/s",
                    "deliveries_per_s",
                    by,
                    kinds=("raw", "wschat"),
                )
            )
    return out


# -- big rooms: a join storm into one room, W1 in a room of 5,000 --------------------


def _storm_cases(quick: bool) -> list[Case]:
    """N clients join one room at once: ``raw`` (joins without presence) against
    wschat (and wschat at ``--base``), interleaved; the Node generator only."""
    sizes = STORM_SIZES[:1] if quick else STORM_SIZES
    limit = STORM_TIMEOUT[0]
    cases = []
    for n in sizes:
        args = ["--n", str(n), "--timeout", f"{limit:g}"]
        args += ["--quiet", f"{STORM_QUIET[0]:g}"]
        kinds = ["raw", "wschat"] + (["wschat-base"] if BASE_SRC else [])
        # Both servers again, each starting the storm from the same GC state (see
        # _storm_same_gc_state).
        kinds += ["raw-gcreset", "wschat-gcreset"]
        for label in kinds:
            cases.append(
                Case(
                    f"storm-{n}-{label}",
                    "wschat" if label.startswith("wschat") else "raw",
                    "storm",
                    args,
                    options=["gc=reset"] if label.endswith("-gcreset") else [],
                    src=BASE_SRC[0] if label == "wschat-base" else None,
                    loadgen="node",
                    timeout=limit + 120,
                )
            )
    return cases


def _storm_same_gc_state(
    title: str, runs: dict[str, list[dict[str, Any]]], n: int
) -> list[dict[str, Any]]:
    """STORM with both servers starting from the same GC state (``gc=reset``).

    Where the cyclic GC's counters stand when a storm starts is left by each app's
    imports, not by its joins, and it decides whether a storm of 1,000 takes one
    full collection or two (about 60 ms of a 0.6 s storm, the last one over every
    connection). One collection before serving puts both servers at the same
    start; each storm's own collections are all counted.
    """
    kinds = ("raw-gcreset", "wschat-gcreset")
    by = {k: runs.get(f"storm-{n}-{k}", []) for k in kinds}
    if not all(by.values()):
        return []
    base, subject = kinds

    def same_state(metric: str, key: str, **target: Any) -> dict[str, Any]:
        return row(
            title,
            f"{metric}, both from the same GC state",
            key,
            by,
            kinds=kinds,
            base=base,
            subject=subject,
            **target,
        )

    return [
        same_state(
            "time until all ready and quiet s",
            "storm_s",
            target="<= 1.5x raw",
            check=lambda r: r <= 1.5,
        ),
        same_state("full GC collections", "gc_full"),
        same_state("server GC ms", "gc_ms"),
    ]


def _count_row(
    workload: str,
    metric: str,
    runs: dict[str, list[dict[str, Any]]],
    kinds: Sequence[str],
) -> dict[str, Any]:
    """A row of how many runs of each column did not finish (sums, not medians)."""
    line = row(workload, metric, "finished", runs, kinds=kinds)
    line["medians"] = {
        k: float(sum(not r.get("finished") for r in runs[k])) if runs.get(k) else None
        for k in kinds
    }
    line["spreads"] = dict.fromkeys(kinds, "")
    line["ratio"] = None
    return line


def _storm_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    kinds = ("raw", "wschat", "wschat-base")
    out: list[dict[str, Any]] = []
    per_size: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for n in STORM_SIZES:
        by = {k: runs.get(f"storm-{n}-{k}", []) for k in kinds}
        if not any(by.values()):
            continue
        per_size[n] = by
        title = f"STORM N={n}"
        out += _before_after(title, "time until all ready and quiet s", "storm_s", by)
        out += _before_after(title, "bytes sent per client", "bytes_per_client", by)
        out.append(
            row(
                title,
                "time until all ready and quiet s",
                "storm_s",
                by,
                kinds=kinds,
                target="<= 1.5x raw",
                check=lambda r: r <= 1.5,
            )
        )
        out.append(
            _count_row(
                title,
                f"runs not finished in {STORM_TIMEOUT[0]:g} s (of each column)",
                by,
                kinds,
            )
        )
        for metric, key in (
            ("time until all ready s", "all_ready_s"),
            ("presence after the last ready s", "tail_s"),
            ("bytes sent per client (total / N)", "bytes_per_client"),
            ("bytes sent, total", "bytes_total"),
            ("frames sent, total", "frames_total"),
            ("largest ready frame, bytes", "ready_bytes_max"),
            ("presence frames to the first member", "first_client_presence_frames"),
            ("count in the first member's last presence", "last_presence_count"),
            ("failures", "failures"),
            ("server CPU s", "server_cpu_s"),
            ("server GC ms", "gc_ms"),
            ("full GC collections", "gc_full"),
            ("generator CPU % during the joins", "loadgen_cpu_pct_joins"),
        ):
            out.append(row(title, metric, key, by, kinds=kinds))
        out += _storm_same_gc_state(title, runs, n)
    # Bytes O(N): bytes per client at the largest size over the smallest, finished
    # runs only (1.0 when the total grows like N, N5/N1 when like N^2).
    if len(per_size) > 1:
        small, large = min(per_size), max(per_size)
        for k in kinds:
            by = {
                str(n): [r for r in per_size[n][k] if r.get("finished")]
                for n in (small, large)
            }
            if not all(by.values()):
                continue
            out.append(
                row(
                    f"STORM {k}",
                    f"bytes per client, N={large} / N={small}",
                    "bytes_per_client",
                    by,
                    kinds=(str(small), str(large)),
                    base=str(small),
                    subject=str(large),
                    target="~1 (bytes O(N))",
                    check=lambda r: r <= 1.5,
                )
            )
    return out


def _history_cases(quick: bool) -> list[Case]:
    """W1 on wschat with history on (the default, in memory) and off, interleaved."""
    time_args = ["--duration", "1.5", "--warmup", "0.5"] if quick else []
    cases = []
    for n in (100, 1000):
        args = ["--n", str(n), *time_args]
        cases.append(Case(f"hist-{n}-wschat", "wschat", "w1", args))
        cases.append(
            Case(f"hist-{n}-wschat-off", "wschat", "w1", args, options=["history=0"])
        )
    return cases


def _history_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    kinds = ("wschat-off", "wschat")
    for n in (100, 1000):
        by = {k: runs.get(f"hist-{n}-{k}", []) for k in kinds}
        out.append(
            row(
                f"W1 N={n}, history on/off",
                "deliveries/s",
                "deliveries_per_s",
                by,
                target=">= 0.9x history off",
                check=lambda r: r >= 0.9,
                base="wschat-off",
                kinds=kinds,
            )
        )
        for key, metric in (
            ("server_us_per_delivery", "server CPU us/delivery"),
            ("p50_ms", "p50 latency ms"),
            ("p99_ms", "p99 latency ms"),
        ):
            out.append(
                row(
                    f"W1 N={n}, history on/off",
                    metric,
                    key,
                    by,
                    base="wschat-off",
                    kinds=kinds,
                )
            )
    return out


def _w1big_cases(quick: bool) -> list[Case]:
    """W1 in one room of :data:`W1BIG_N`, once it filled and went quiet."""
    n = W1BIG_N
    args = ["--n", str(n), "--settle-limit", f"{STORM_TIMEOUT[0]:g}"]
    if quick:
        args += ["--duration", "1.5", "--warmup", "0.5"]
    cases = [
        Case(f"w1big-{k}", k, "w1", args, timeout=STORM_TIMEOUT[0] + 240)
        for k in ("raw", "wschat")
    ]
    if BASE_SRC:
        base = _base_case("w1big", "w1", args)
        base.timeout = STORM_TIMEOUT[0] + 240
        cases.append(base)
    return cases


def _w1big_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    kinds = ("raw", "wschat", "wschat-base")
    by = {k: runs.get(f"w1big-{k}", []) for k in kinds}
    title = f"W1 N={W1BIG_N}"
    out = [
        *_before_after(title, "deliveries/s", "deliveries_per_s", by),
        row(
            title,
            "deliveries/s",
            "deliveries_per_s",
            by,
            kinds=kinds,
            target=">= 0.85x raw",
            check=lambda r: r >= 0.85,
        ),
    ]
    for key, metric in (
        ("server_us_per_delivery", "server CPU us/delivery"),
        ("p50_ms", "p50 latency ms"),
        ("p99_ms", "p99 latency ms"),
        ("server_cpu_pct", "server CPU %"),
        ("loadgen_cpu_pct", "load generator CPU %"),
        ("fill_s", "time to fill the room s"),
        ("settle_s", "then until quiet s"),
        ("settled", "went quiet before the measurement (1 = yes)"),
        ("lost", "messages lost"),
    ):
        out.append(row(title, metric, key, by, kinds=kinds))
    return out


# -- a reconnect storm: history recovery for a whole room at once --------------------

#: RECONNECT: members of the room that drop and reconnect, and the messages sent while
#: they are away.
RECONNECT_N = 1000
RECONNECT_BACKLOG = 50


def _reconnect_cases(quick: bool) -> list[Case]:
    """N members of one room drop at once, ``RECONNECT_BACKLOG`` messages go out,
    all reconnect at once with ``since``/``epoch`` (and, for comparison, without:
    a plain rejoin that recovers nothing), interleaved; the Node generator only."""
    n = 200 if quick else RECONNECT_N
    args = ["--n", str(n), "--backlog", str(RECONNECT_BACKLOG), "--timeout", "120"]
    return [
        Case("reconnect-wschat", "wschat", "reconnect", args, loadgen="node"),
        Case(
            "reconnect-wschat-nosince",
            "wschat",
            "reconnect",
            [*args, "--since", "0"],
            loadgen="node",
        ),
    ]


def _reconnect_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    kinds = ("wschat-nosince", "wschat")
    by = {k: runs.get(f"reconnect-{k}", []) for k in kinds}
    n = next((r["n"] for rs in by.values() for r in rs if "n" in r), RECONNECT_N)
    title = f"RECONNECT N={n}, {RECONNECT_BACKLOG} missed"
    out = [
        row(
            title,
            "time until all recovered s (since) / all ready s (no since)",
            "recover_s",
            by,
            kinds=kinds,
            base="wschat-nosince",
        )
    ]
    for metric, key in (
        ("p50 time to recover s", "p50_recover_s"),
        ("time until all ready s", "all_ready_s"),
        ("ready with recovered: true", "recovered"),
        ("missed messages replayed, expected", "expected_replayed"),
        ("messages received", "replayed"),
        ("lost", "lost"),
        ("duplicated", "duplicates"),
        ("out of order", "out_of_order"),
        ("failures", "failures"),
        ("bytes sent, total", "bytes_total"),
        ("server CPU s", "server_cpu_s"),
        ("server CPU %", "server_cpu_pct"),
        ("load generator CPU %", "loadgen_cpu_pct"),
    ):
        out.append(row(title, metric, key, by, kinds=kinds, base="wschat-nosince"))
    return out


WORKLOADS = {
    "LOADGEN": Workload(
        "LOADGEN", "W1 with both load generators", _loadgen_cases, _loadgen_rows
    ),
    "W1": Workload("W1", "fan-out, one room, closed loop", _w1_cases, _w1_rows),
    "W2": Workload("W2", "slow consumer", _w2_cases, _w2_rows),
    "W3": Workload("W3", "many rooms", _w3_cases, _w3_rows),
    "W4": Workload("W4", "idle memory", _w4_cases, _w4_rows),
    "W5": Workload("W5", "connect storm", _w5_cases, _w5_rows),
    "CHURN": Workload("CHURN", "churn", _churn_cases, _churn_rows),
    "DEFLATE": Workload("DEFLATE", "permessage-deflate", _deflate_cases, _deflate_rows),
    "FLOOD": Workload("FLOOD", "refusal flood", _flood_cases, _flood_rows),
    "STORM": Workload("STORM", "join storm into one room", _storm_cases, _storm_rows),
    "W1BIG": Workload("W1BIG", "fan-out, one room of 5,000", _w1big_cases, _w1big_rows),
    "HISTORY": Workload(
        "HISTORY", "W1 with history on and off", _history_cases, _history_rows
    ),
    "RECONNECT": Workload(
        "RECONNECT",
        "a room of 1,000 reconnects with since",
        _reconnect_cases,
        _reconnect_rows,
    ),
}


# -- report --------------------------------------------------------------------------


def describe_loadgen(generator: str) -> str:
    """Which load generator, on what."""
    if generator == "node":
        version = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        return (
            f"benchmarks/node/loadgen.mjs on Node {version} (lean client), the "
            "Deflate workload on benchmarks/loadgen.py"
        )
    return f"benchmarks/loadgen.py on Python {platform.python_version()}"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from importlib.metadata import version

    import uvicorn

    model = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False
        ).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "websockets": version("websockets"),
        "anyio": version("anyio"),
        "kernel": platform.release(),
        "load_avg_at_start": os.getloadavg(),
    }


def _load(avg: Any) -> str:
    if not avg:
        return "?"
    return "/".join(f"{v:.2f}" for v in avg)


def markdown(report: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    m = report["machine"]
    lines = [
        f"# wschat benchmark results ({report['started']})",
        "",
        f"Machine: {m['cpus']} cores, {m['cpu_model']}; Python {m['python']}, "
        f"uvicorn {m['uvicorn']} (websockets-sansio, asyncio loop), "
        f"websockets {m['websockets']}. Repeats: {report['repeats']}"
        f"{' (quick mode)' if report['quick'] else ''}. "
        f"Server on core 0, load generator on core 1: {report.get('loadgen', '?')}. "
        f"Load average {_load(m.get('load_avg_at_start'))} at the start, "
        f"{_load(m.get('load_avg_at_end'))} at the end.",
        "",
        "Medians of the repeats, (min-max) when repeated; the ratio is the median "
        "of the per-repeat ratios of the named column to the base column. "
        "`generator CPU`: the busiest load generator of the row's columns, the "
        "median of its repeats and its busiest repeat; BUSY when above "
        f"{GEN_BUSY_PCT:.0f}% (the measurement may then be the generator's limit, "
        "not the server's); in W1 and W3, how many runs of the row's columns had "
        f"their server below {SERVER_IDLE_PCT:.0f}% of its core (neither was at "
        "its limit: the closed loop waited on something else).",
    ]
    columns: list[str] = []
    for r in report["rows"]:
        kinds = list(r["medians"])
        if kinds != columns:
            columns = kinds
            lines += [
                "",
                f"| workload | metric | {' | '.join(columns)} | ratio | target | met "
                "| generator CPU |",
                "|---|---|" + "---|" * (len(columns) + 4),
            ]
        cells = []
        for k in columns:
            cell = _fmt(r["medians"][k])
            if r["spreads"].get(k):
                cell += f" ({r['spreads'][k]})"
            cells.append(cell)
        ratio = ""
        if r["ratio"] is not None:
            ratio = f"{r['subject']}/{r['base']}: {r['ratio']:.2f}x"
            if r["ratio_spread"]:
                ratio += f" ({r['ratio_spread']})"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        lines.append(
            f"| {r['workload']} | {r['metric']} | {' | '.join(cells)} | {ratio} "
            f"| {r['target']} | {met} | {generator_cell(r)} |"
        )
    micro = report.get("micro")
    if micro and "broadcast" in micro:
        b, w, wb = micro["broadcast"], micro["writer"], micro["writer_batch"]
        lines += [
            "",
            "Core micro-benchmark (no sockets): broadcast to "
            f"{b['members']:,} outboxes: **{b['us_per_recipient']} us per recipient** "
            f"({b['us_per_recipient_min']}-{b['us_per_recipient_max']}; target <= 2); "
            f"writer drain: {w['us_per_frame']} us per frame, "
            f"{wb['us_per_frame']} us with batch frames.",
        ]
    if micro and "refusal" in micro:
        r = micro["refusal"]
        lines += [
            "",
            "A refused handshake inside `chat_app` (no server): "
            f"{r['malformed_us']} us with a junk token, "
            f"{r['bad_signature_us']} us with a bad signature.",
        ]
    if report.get("w6") is not None:
        lines += ["", f"W6 (two processes, Redis): `{json.dumps(report['w6'])}`"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        help="a workload (LOADGEN, W1..W5, CHURN, DEFLATE, FLOOD, STORM, W1BIG, "
        "HISTORY, RECONNECT, MICRO, W6); repeatable",
    )
    parser.add_argument(
        "--loadgen",
        choices=GENERATORS,
        help="the load generator (default: node when it can run, else python); "
        "LOADGEN runs both whatever this says",
    )
    parser.add_argument("--quick", action="store_true", help="once, small sizes")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--base",
        metavar="REV",
        help="W1, W4, W5, FLOOD, STORM, W1BIG: also run wschat as of this git "
        "revision, interleaved with every other case (before/after)",
    )
    parser.add_argument(
        "--storm-timeout",
        type=float,
        default=STORM_TIMEOUT[0],
        metavar="S",
        help="STORM: a storm not done in S seconds counts as not finished; W1BIG: "
        "how long the filled room may take to go quiet (default %(default)g)",
    )
    parser.add_argument(
        "--storm-quiet",
        type=float,
        default=STORM_QUIET[0],
        metavar="S",
        help="STORM: the server has gone quiet once no client received a frame for "
        "S seconds, not counted in the time (default %(default)g); keep it above "
        "any presence coalescing interval",
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    only = {o.upper() for o in args.only} if args.only else None
    LOADGEN[:] = [choose_loadgen(args.loadgen)]
    STORM_TIMEOUT[:] = [args.storm_timeout]
    STORM_QUIET[:] = [args.storm_quiet]
    # Same-session priority: a shared machine's other work must not take the
    # benchmark's cores in the middle of a measurement (Linux autogroup nice).
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text("-10")
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / f"{started}-logs"
    log_dir.mkdir(exist_ok=True)
    if args.base:
        BASE_SRC[:] = [str(export_src(args.base, args.out / f"{started}-base"))]
    report: dict[str, Any] = {
        "started": started,
        "loadgen": describe_loadgen(LOADGEN[0]),
        "quick": args.quick,
        "repeats": repeats,
        "machine": machine(),
        "runs": {},
        "rows": [],
    }
    selected = [w for name, w in WORKLOADS.items() if only is None or name in only]
    if not node_ready():
        node_only = ("LOADGEN", "STORM", "RECONNECT")
        for name in node_only:
            if any(w.name == name for w in selected):
                print(f"{name} skipped: it needs the Node generator", flush=True)
        selected = [w for w in selected if w.name not in node_only]
    for workload in selected:
        cases = workload.cases(args.quick)
        runs: dict[str, list[dict[str, Any]]] = {c.label: [] for c in cases}
        for rep in range(repeats):
            for case in cases:
                result = run_case(case, log_dir)
                runs[case.label].append(result)
                print(
                    f"[{workload.name} {rep + 1}/{repeats}] {case.label}: "
                    f"{json.dumps({k: v for k, v in result.items() if k != 'rss_mb'})}",
                    flush=True,
                )
        report["runs"][workload.name] = runs
        report["rows"] += workload.rows(runs)
    if only is None or "MICRO" in only:
        report["micro"] = run_micro(args.quick)
        print(f"[MICRO] {json.dumps(report['micro'])}", flush=True)
    if only is None or "W6" in only:
        report["w6"] = run_w6(args.quick)
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    base = args.out / started
    base.with_suffix(".json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    base.with_suffix(".md").write_text(text)
    print(text)
    print(f"results: {base.with_suffix('.json')} and {base.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
