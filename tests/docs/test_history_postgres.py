"""The PostgreSQL history store of docs/examples/history_postgres.py, on a real server.

It needs the PostgreSQL at 127.0.0.1:5432 (trust auth, database ``test``; the user
``postgres``, else the current user; ``WSCHAT_TEST_POSTGRES_DSN`` overrides). Each
test run uses a schema of its own and drops it after. Where no PostgreSQL answers,
the tests skip saying so (under ``CI`` they fail). asyncpg is asyncio-only, so these
tests run on asyncio only.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import asyncpg
import pytest

from tests.docs.test_docs import load_example
from tests.support.common import IN_CI
from wschat.history import HistoryStore, encode_message_template
from wschat.testing import check_history_store

pytestmark = pytest.mark.anyio
HOST, PORT = "127.0.0.1", 5432
NO_POSTGRES = (
    f"no PostgreSQL at {HOST}:{PORT}; start one with trust auth and a database "
    "'test' (apt-get install postgresql), or set WSCHAT_TEST_POSTGRES_DSN"
)


@pytest.fixture
def anyio_backend() -> str:
    """asyncpg runs on asyncio only."""
    return "asyncio"


def postgres_answers() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return True
    except OSError:
        return False


async def connect_pool() -> asyncpg.Pool:
    """A pool on the test database: the DSN given, else postgres, else this user."""
    given = os.environ.get("WSCHAT_TEST_POSTGRES_DSN")
    if given is None and not postgres_answers():
        if IN_CI:
            pytest.fail(NO_POSTGRES)
        pytest.skip(NO_POSTGRES)
    candidates = (
        [given]
        if given
        else [
            f"postgresql://postgres@{HOST}:{PORT}/test",
            f"postgresql://{getpass.getuser()}@{HOST}:{PORT}/test",
        ]
    )
    errors = []
    for dsn in candidates:
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=10, timeout=10
            )
            return pool
        except (OSError, asyncpg.PostgresError) as exc:
            errors.append(f"{dsn}: {type(exc).__name__}: {exc}")
    # A server answers but refuses us, or the DSN given does not work: that is a
    # failure to fix, not a skip.
    pytest.fail("no PostgreSQL login worked:\n" + "\n".join(errors))


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("history_postgres")


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool()
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def schema(pool: asyncpg.Pool) -> AsyncIterator[str]:
    name = "wschat_test_" + os.urandom(4).hex()
    try:
        yield name
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


async def make_store(example: ModuleType, pool: asyncpg.Pool, schema: str) -> Any:
    store = example.PostgresHistoryStore(pool, schema=schema)
    await store.create_tables()
    return store


def template(n: int, room: str = "lobby") -> Any:
    return encode_message_template(
        id=f"m{n}", chat_id=room, user="alice", body=n, ts=0, client_id=None
    )


async def test_postgres_store_passes_the_conformance_suite(
    example: ModuleType, pool: asyncpg.Pool, schema: str
) -> None:
    store = await make_store(example, pool, schema)
    assert isinstance(store, HistoryStore)
    ran = await check_history_store(lambda: store)
    assert ran == [
        "basics",
        "empty_room",
        "append_and_read",
        "paging",
        "rooms_apart",
        "bad_arguments",
        "concurrency",
    ]
    # Every message the suite appended is a row: 1 + 12 + 12 + 15 + 500 + 125.
    count = await pool.fetchval(f"SELECT count(*) FROM {schema}.messages")
    assert count == 665
    assert store.health().as_dict() == {
        "name": "postgres",
        "healthy": True,
        "detail": "",
        "rooms": None,
        "entries": None,
        "memory_bytes": 0,
        "max_memory_bytes": None,
        "evicted": 0,
    }


async def test_offsets_and_epochs_survive_a_restart(
    example: ModuleType, pool: asyncpg.Pool, schema: str
) -> None:
    first = await make_store(example, pool, schema)
    stored = [await first.append("lobby", template(n)) for n in (1, 2, 3)]
    # Another process (a new store, its own pool) on the same database.
    other_pool = await connect_pool()
    try:
        second = await make_store(example, other_pool, schema)
        assert await second.position("lobby") == (stored[0].epoch, 3)
        page = await second.read_after("lobby", 1, 10)
        assert [e.frame for e in page.messages] == [s.frame for s in stored[1:]]
        assert (await second.append("lobby", template(4))).offset == 4
    finally:
        await other_pool.close()


async def test_the_page_queries_use_the_primary_key_index(
    example: ModuleType, pool: asyncpg.Pool, schema: str
) -> None:
    store = await make_store(example, pool, schema)
    await pool.execute(
        f"INSERT INTO {schema}.rooms VALUES ('big', 'e', 20000);"
        f"INSERT INTO {schema}.messages (chat_id, msg_offset, frame) "
        "SELECT 'r' || (i % 200), i, repeat('x', 200) "
        "FROM generate_series(1, 20000) AS i;"
        f"INSERT INTO {schema}.messages (chat_id, msg_offset, frame) "
        "SELECT 'big', i, repeat('x', 200) FROM generate_series(1, 20000) AS i;"
        f"ANALYZE {schema}.messages"
    )
    for sql, bound in (("after", 19_000), ("before", 500)):
        plan = await pool.fetch("EXPLAIN " + store.sql[sql], "big", bound, 50)
        text = "\n".join(row[0] for row in plan)
        assert "messages_pkey" in text, text
        assert "Seq Scan on messages" not in text, text
    page = await store.read_before("big", 500, 50)
    assert [e.offset for e in page.messages] == list(range(450, 500))
    assert (page.first, page.latest) == (1, 20000)


async def test_a_bad_schema_name_is_refused(
    example: ModuleType, pool: asyncpg.Pool
) -> None:
    for bad in ("Robert'); DROP TABLE students;--", "1abc", "a-b", "x" * 64, ""):
        with pytest.raises(ValueError, match="schema must match"):
            example.PostgresHistoryStore(pool, schema=bad)


async def test_health_says_when_the_database_is_not_reached(
    example: ModuleType, schema: str
) -> None:
    pool = await connect_pool()
    store = await make_store(example, pool, schema)
    await store.append("lobby", template(1))
    assert store.health().healthy
    await pool.close()
    with pytest.raises(asyncpg.InterfaceError):
        await store.append("lobby", template(2))
    health = store.health()
    assert not health.healthy
    assert health.detail == "PostgreSQL: InterfaceError"


async def test_deleting_old_rows_or_a_whole_room_as_the_page_says(
    example: ModuleType, pool: asyncpg.Pool, schema: str
) -> None:
    store = await make_store(example, pool, schema)
    epoch = (await store.append("lobby", template(1))).epoch
    for n in (2, 3):
        await store.append("lobby", template(n))
    # Trimming old rows keeps the counter: offsets and the epoch go on.
    await pool.execute(f"DELETE FROM {schema}.messages WHERE msg_offset <= 2")
    page = await store.read_after("lobby", 0, 10)
    assert ([e.offset for e in page.messages], page.first) == ([3], 3)
    assert page.complete_after(2)
    assert not page.complete_after(1)
    assert await store.append("lobby", template(4)) == (
        4,
        epoch,
        template(4).render(4),
    )
    # Erasing the room (both tables, one transaction) starts a new epoch at 1.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"DELETE FROM {schema}.messages WHERE chat_id = 'lobby'")
        await conn.execute(f"DELETE FROM {schema}.rooms WHERE chat_id = 'lobby'")
    stored = await store.append("lobby", template(1))
    assert stored.offset == 1
    assert stored.epoch != epoch
