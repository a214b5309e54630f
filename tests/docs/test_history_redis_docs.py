"""docs/history.md's Redis section: its snippet runs, its tables are the code's."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest
from redis import Redis

from tests.docs.test_history_docs import flat, snippets, text
from tests.support.common import source_env
from tests.support.redis_server import need_redis
from wschat.history.redis import RedisHistoryStore

pytestmark = pytest.mark.redis


def test_the_redis_snippet_runs_on_the_shared_redis() -> None:
    need_redis()
    (snippet,) = [s for s in snippets() if "RedisHistoryStore" in s]
    assert snippets().index(snippet) == 2
    try:
        run = subprocess.run(
            [sys.executable, "-c", snippet],
            capture_output=True,
            text=True,
            timeout=60,
            env=source_env(),
        )
    finally:
        client = Redis()
        keys = list(client.scan_iter(match="docs*:h:{lobby}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    assert run.returncode == 0, run.stderr
    assert "'name': 'redis', 'healthy': True" in run.stdout


def test_the_options_table_is_the_codes_defaults() -> None:
    section = text().split("## Redis", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", section, re.MULTILINE))
    defaults = {
        name: param.default
        for name, param in inspect.signature(RedisHistoryStore).parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    assert {name: repr(value) for name, value in defaults.items()} == {
        name: value.replace('"', "'") for name, value in rows.items()
    } | {"ttl": "300.0"}
    assert rows["ttl"] == "300"


def test_the_page_names_the_envelope_and_keys_the_code_uses() -> None:
    page = flat()
    assert "`m||<frame>` on `<prefix>r:<chat_id>`" in page
    assert "`<prefix>h:{<room>}:m`" in page
    assert "`<prefix>h:{<room>}:s`" in page
    assert "5 x `op_timeout`" in page
