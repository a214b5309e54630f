# docs/examples/history_postgres.py
"""Long-term scrollback in your PostgreSQL: a wschat HistoryStore on asyncpg.

asyncpg runs on asyncio only, so an app using this store runs on asyncio (uvicorn
and hypercorn do by default). Every message is kept; offsets and epochs live in the
database, so they survive a restart of every process.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Any

import asyncpg

from wschat.history import Entry, FrameTemplate, HistoryHealth, Page, Position, Stored

TABLES = """
CREATE SCHEMA IF NOT EXISTS {schema};
-- One row per room: its epoch and its offset counter.
CREATE TABLE IF NOT EXISTS {schema}.rooms (
    chat_id text PRIMARY KEY,
    epoch text NOT NULL,
    latest bigint NOT NULL
);
-- One row per message; the primary key is the index both page queries use.
CREATE TABLE IF NOT EXISTS {schema}.messages (
    chat_id text NOT NULL,
    msg_offset bigint NOT NULL,
    frame text NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, msg_offset)
);
"""

# One statement, so one transaction: the room's row is locked while its counter
# goes up, so concurrent appends to a room get consecutive offsets, and the frame
# is built with its offset inside the same statement (head || offset || tail).
APPEND = """
WITH room AS (
    INSERT INTO {schema}.rooms AS r (chat_id, epoch, latest) VALUES ($1, $4, 1)
    ON CONFLICT (chat_id) DO UPDATE SET latest = r.latest + 1
    RETURNING r.epoch, r.latest
)
INSERT INTO {schema}.messages (chat_id, msg_offset, frame)
SELECT $1, room.latest, $2 || room.latest::text || $3 FROM room
RETURNING msg_offset, (SELECT epoch FROM room)
"""

# A room asked about before its first message gets its row (and epoch) now, so
# the epoch a client is told is the one the first message gets.
CREATE_ROOM = """
INSERT INTO {schema}.rooms (chat_id, epoch, latest) VALUES ($1, $2, 0)
ON CONFLICT (chat_id) DO NOTHING
"""

POSITION = "SELECT epoch, latest FROM {schema}.rooms WHERE chat_id = $1"

# The room's position and the page come from one statement: one snapshot.
PAGE = """
SELECT r.epoch, r.latest,
       (SELECT min(msg_offset) FROM {schema}.messages WHERE chat_id = $1) AS first,
       m.msg_offset, m.frame
FROM {schema}.rooms AS r
LEFT JOIN LATERAL (
    SELECT msg_offset, frame FROM {schema}.messages
    WHERE chat_id = $1 AND {condition}
    ORDER BY msg_offset {direction} LIMIT $3
) AS m ON true
WHERE r.chat_id = $1
"""
AFTER = PAGE.replace("{condition}", "msg_offset > $2").replace("{direction}", "ASC")
BEFORE = PAGE.replace("{condition}", "msg_offset < $2").replace("{direction}", "DESC")

BIGINT_MAX = 2**63 - 1
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def new_epoch() -> str:
    return secrets.token_hex(8)


class PostgresHistoryStore:
    """Keeps every message of every room in PostgreSQL.

    Args:
        pool: An asyncpg pool, opened and closed by the app.
        schema: The schema holding the two tables (lowercase letters, digits, _).
    """

    name = "postgres"

    def __init__(self, pool: asyncpg.Pool, *, schema: str = "wschat") -> None:
        if not SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema must match {SCHEMA_NAME.pattern}; got {schema!r}")
        self.pool = pool
        self.schema = schema
        self.sql = {
            name: sql.replace("{schema}", schema)
            for name, sql in [
                ("append", APPEND),
                ("create_room", CREATE_ROOM),
                ("position", POSITION),
                ("after", AFTER),
                ("before", BEFORE),
            ]
        }
        self.error = ""

    async def create_tables(self) -> None:
        """Create the schema and its tables if they do not exist."""
        await self.pool.execute(TABLES.replace("{schema}", self.schema))

    def health(self) -> HistoryHealth:
        """Whether the last call reached the database; nothing kept in memory."""
        return HistoryHealth(self.name, healthy=not self.error, detail=self.error)

    async def run(self, sql: str, method: str, *args: Any) -> Any:
        try:
            result = await getattr(self.pool, method)(self.sql[sql], *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.error = f"PostgreSQL: {type(exc).__name__}"
            raise
        self.error = ""
        return result

    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        head, tail = template
        row = await self.run("append", "fetchrow", chat_id, head, tail, new_epoch())
        offset, epoch = row
        return Stored(offset, epoch, template.render(offset))

    async def position(self, chat_id: str) -> Position:
        row = await self.run("position", "fetchrow", chat_id)
        if row is None:
            await self.run("create_room", "execute", chat_id, new_epoch())
            row = await self.run("position", "fetchrow", chat_id)
        return Position(row["epoch"], row["latest"])

    async def read_after(self, chat_id: str, after: int, limit: int) -> Page:
        if type(after) is not int or after < 0:
            raise ValueError(f"after must be an integer of at least 0; got {after!r}")
        check_limit(limit)
        return await self.page("after", chat_id, min(after, BIGINT_MAX), limit)

    async def read_before(self, chat_id: str, before: int | None, limit: int) -> Page:
        if before is not None and (type(before) is not int or before < 1):
            raise ValueError(
                f"before must be an integer of at least 1, or None; got {before!r}"
            )
        check_limit(limit)
        end = BIGINT_MAX if before is None else min(before, BIGINT_MAX)
        return await self.page("before", chat_id, end, limit)

    async def page(self, sql: str, chat_id: str, bound: int, limit: int) -> Page:
        rows = await self.run(sql, "fetch", chat_id, bound, min(limit, BIGINT_MAX))
        if not rows:  # no row for the room yet: create it, fixing its epoch
            position = await self.position(chat_id)
            return Page(position.epoch, position.offset, position.offset + 1, ())
        epoch, latest, first = rows[0]["epoch"], rows[0]["latest"], rows[0]["first"]
        entries = sorted(
            Entry(r["msg_offset"], r["frame"]) for r in rows if r["frame"] is not None
        )
        return Page(epoch, latest, latest + 1 if first is None else first, (*entries,))

    async def retain(self, chat_ids: Iterable[str]) -> None:
        """Nothing to do: rooms and their counters are never forgotten."""


def check_limit(limit: int) -> None:
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be an integer of at least 1; got {limit!r}")
