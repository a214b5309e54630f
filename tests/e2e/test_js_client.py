"""The TypeScript/JavaScript client (clients/js) under Node against a real server.

Runs ``npm test --prefix clients/js``: node's test runner starts the wschat server of
clients/js/test/server.py with this Python and drives the client through round trip,
stops (4403, a malformed token, 4400, 1003, 1009, 4429 too_many_connections: one
handshake), the retried codes (1001, 1011, 1013, 4429 rate_limited: one reconnect within
the code's ceiling), token refresh (4401, token_expiring), resume after restarts (a
real restart on a RedisHistoryStore recovers the gap), backoff on a fake clock and
close() cleanup. Skips only when Node is missing, and fails in CI then.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.common import IN_CI

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"
SERVER = PACKAGE / "test" / "server.py"


def _node_or_skip() -> str:
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        if IN_CI:
            pytest.fail("the JS client's tests must run in CI: node/npm not found")
        pytest.skip("node and npm not found: the JS client's tests need Node 20+")
    if not (PACKAGE / "node_modules" / "ws").is_dir():
        pytest.fail(
            "clients/js has no node_modules: run npm ci --prefix clients/js "
            "(scripts/test does)"
        )
    return npm


def test_the_js_client_under_node() -> None:
    npm = _node_or_skip()
    env = dict(os.environ)
    env["WSCHAT_PYTHON"] = sys.executable
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    done = subprocess.run(
        [npm, "test", "--prefix", str(PACKAGE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
    assert "# fail 0" in done.stdout


def test_the_js_test_server_catches_a_frame_the_schema_refuses() -> None:
    """clients/js/test/server.py checks each frame it sends (test/server.mjs fails
    the test file on a violation): its check refuses what the schema refuses."""
    spec = importlib.util.spec_from_file_location("js_test_server", SERVER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    check = module.frame_checker()
    assert check is not None, "jsonschema is installed in the test environment"
    assert check('{"type": "pong", "id": 7}') is None
    problem = check('{"type": "message", "id": "m1"}')
    assert problem is not None
    assert "'chat_id' is a required property" in problem
    assert check("not json") == "not JSON: 'not json'"
