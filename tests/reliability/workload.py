"""Writers: random transactions on the captured tables, and a ledger of what each one committed.

Every transaction records its xid and fate. `committed` ones must all be in the change log with
the number of row changes the writer counted; `rolled_back` ones (explicit rollbacks, deadlocks,
a connection killed before COMMIT) must leave nothing anywhere; `unknown` ones lost their
connection during COMMIT, so the log alone says what happened. Rolled-back writes (whole
transactions and savepoints) store ROLLBACK_MARK in their values, so a leak shows up in any frame.

Besides the steady writers, the fault schedule (scenario.py) adds:

- hostile writers: a Writer whose session first sets `rowcast.wake = off`, `rowcast.rang = 'y'`
  (the trigger's once-per-transaction flag: the doorbell never rings), `rowcast.wake_mode =
  'coalesced'` and a weird search_path with a temp table named `changes` in front; their changes
  are ledgered like any other and must all arrive (by the notifier's timer, if not rung);
- two-phase transactions (TwoPhase): BEGIN; SET LOCAL rowcast.wake = off; writes; PREPARE
  TRANSACTION, then COMMIT PREPARED or ROLLBACK PREPARED from another session a random short
  time later. The fate is drawn first, so the ones to roll back write ROLLBACK_MARK values; the
  ledger records the outcome (a connection lost around PREPARE is settled from pg_prepared_xacts);
- pathological rows (odd_rows): at negative keys of t, which no other writer touches, a jsonb
  nested 1,200 deep (undecodable for rowcast: see model.DEEP) and a 400-digit numeric, inserted,
  updated and deleted.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.reliability.model import OWNERS, ROLLBACK_MARK

AConn = psycopg.AsyncConnection[tuple[Any, ...]]
HOT_T = 16  # t rows 1..16 are hot: every writer upserts them
BIG = 100_000  # the occasional 100 KB value: announced by reference, read from the log


class _Rollback(Exception):
    """The writer chose to roll this transaction back."""


@dataclass
class Ledger:
    committed: dict[int, int] = field(default_factory=dict)  # xid -> row changes counted
    rolled_back: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)
    savepoints_rolled_back: int = 0
    big_rows: int = 0
    key_moves: int = 0
    truncates: int = 0
    bursts: int = 0
    hostile: int = 0  # transactions committed by writers with hostile session settings
    prepared: dict[str, int] = field(default_factory=dict)  # committed / rolled back / lost (2PC)
    odd: dict[str, int] = field(default_factory=dict)  # pathological rows written, by kind
    tags: dict[int, str] = field(default_factory=dict)  # xid -> which fault wrote it (for reports)
    errors: dict[str, int] = field(default_factory=dict)

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


@dataclass
class WriterProfile:
    max_ops: int = 6
    rollback: float = 0.08
    savepoint: float = 0.1
    big: float = 0.01
    key_move: float = 0.03
    truncate: float = 0.0
    burst: float = 0.01  # a statement inserting (or deleting) hundreds of wide rows at once
    big_burst: float = 0.006  # ... or dozens of 100 KB rows: megabytes that back up a stalled reader
    pause: tuple[float, float] = (0.0, 0.02)  # between statements inside a transaction
    think: tuple[float, float] = (0.0, 0.01)  # between transactions
    long_pause: float = 0.02  # chance of a 0.1-0.3 s pause inside a transaction


HOSTILE_SETTINGS = (
    "SET rowcast.wake = off",
    "SET rowcast.rang = 'y'",
    "SET rowcast.wake_mode = 'coalesced'",
    'CREATE TEMP TABLE IF NOT EXISTS changes (id bigint, xid xid8, "row" jsonb)',
    'SET search_path = pg_temp, "Ro wcast", rowcast, public',
)


class Writer:
    def __init__(
        self,
        index: int,
        url: str,
        rng: random.Random,
        ledger: Ledger,
        profile: WriterProfile,
        settings: tuple[str, ...] = (),
    ) -> None:
        self.index = index
        self.url = url
        self.rng = rng
        self.ledger = ledger
        self.profile = profile
        self.settings = settings  # run on each new session before writing (hostile writers)
        self.serial = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Write until `stop`; reconnect whenever the connection dies (Postgres restarts)."""
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, application_name=f"writer-{self.index}"
                )
            except psycopg.OperationalError as exc:
                self.ledger.error(exc)
                await asyncio.sleep(0.1)
                continue
            try:
                if self.settings:
                    try:
                        for statement in self.settings:
                            await conn.execute(statement)  # type: ignore[arg-type]
                        await conn.commit()
                    except psycopg.OperationalError as exc:
                        self.ledger.error(exc)
                        continue
                while not stop.is_set() and not conn.broken:
                    await self.transaction(conn)
                    await asyncio.sleep(self.rng.uniform(*self.profile.think))
            finally:
                await conn.close()

    async def transaction(self, conn: AConn) -> None:
        p, rng = self.profile, self.rng
        xid: int | None = None
        counted = 0
        committing = False
        try:
            row = await (await conn.execute("SELECT pg_current_xact_id()::text")).fetchone()
            assert row is not None
            xid = int(row[0])
            for _ in range(rng.randint(1, p.max_ops)):
                if rng.random() < p.savepoint:
                    await self._rolled_back_savepoint(conn)
                else:
                    counted += await self._op(conn, mark="")
                await self._pause()
            if rng.random() < p.rollback:
                await self._op(conn, mark=ROLLBACK_MARK)
                raise _Rollback
            committing = True
            await conn.commit()
            self.ledger.committed[xid] = counted
            if self.settings:
                self.ledger.hostile += 1
                self.ledger.tags[xid] = "hostile writer"
        except _Rollback:
            await conn.rollback()
            if xid is not None:
                self.ledger.rolled_back.add(xid)
        except psycopg.Error as exc:
            self.ledger.error(exc)
            if xid is not None:
                (self.ledger.unknown if committing else self.ledger.rolled_back).add(xid)
            if not conn.broken:
                await conn.rollback()

    async def _pause(self) -> None:
        if self.rng.random() < self.profile.long_pause:
            await asyncio.sleep(self.rng.uniform(0.1, 0.3))
        else:
            await asyncio.sleep(self.rng.uniform(*self.profile.pause))

    async def _rolled_back_savepoint(self, conn: AConn) -> None:
        try:
            async with conn.transaction():
                await self._op(conn, mark=ROLLBACK_MARK)
                await self._op(conn, mark=ROLLBACK_MARK)
                raise psycopg.Rollback
        except psycopg.errors.UniqueViolation:
            pass
        except psycopg.Rollback:
            # The savepoint could not be rolled back: the connection died under it (a Postgres
            # restart). Report it as the connection failure it is, so the transaction is ambiguous.
            raise psycopg.OperationalError("connection lost while rolling back a savepoint") from None
        self.ledger.savepoints_rolled_back += 1

    def _name(self, mark: str) -> str:
        self.serial += 1
        return f"{mark}w{self.index}-{self.serial}"

    async def _op(self, conn: AConn, mark: str) -> int:
        """One random statement; returns how many row changes it made."""
        rng = self.rng
        table = rng.choice(("books", "books", "authors", "t", "t"))
        owner = rng.choice(OWNERS)
        if rng.random() < self.profile.burst:
            return await self._burst(conn, mark, owner)
        if table == "t":
            return await self._op_t(conn, mark, owner)
        if table == "books":
            column, number_col, label = "title", "num_pages", rng.randint(1, 1000)
        else:
            column, number_col, label = "name", "born", rng.randint(1900, 2000)
        choice = rng.random()
        if choice < 0.35:
            sql = f"INSERT INTO {table} ({column}, {number_col}, owner) VALUES (%s, %s, %s)"
            cur = await conn.execute(sql, (self._name(mark), label, owner))
        elif choice < 0.75:  # a hot row: one of the 8 oldest
            sql = (
                f"UPDATE {table} SET {column} = %s, {number_col} = %s, owner = %s "
                f"WHERE id = (SELECT id FROM {table} ORDER BY id LIMIT 1 OFFSET %s)"
            )
            cur = await conn.execute(sql, (self._name(mark), label, owner, rng.randint(0, 7)))
        elif choice < 0.85:  # several rows in one statement
            sql = (
                f"UPDATE {table} SET {number_col} = {number_col} + 1, {column} = %s "
                f"WHERE id IN (SELECT id FROM {table} WHERE owner IS NOT DISTINCT FROM %s ORDER BY id DESC LIMIT 4)"
            )
            cur = await conn.execute(sql, (self._name(mark), owner))
        else:
            offset = rng.randint(0, 7) if rng.random() < 0.5 else rng.randint(8, 200)
            sql = f"DELETE FROM {table} WHERE id = (SELECT id FROM {table} ORDER BY id LIMIT 1 OFFSET %s)"
            cur = await conn.execute(sql, (offset,))
        return max(cur.rowcount, 0)

    async def _burst(self, conn: AConn, mark: str, owner: str | None) -> int:
        """Hundreds of ~700-byte changes in one statement: enough to back up a stalled reader."""
        if self.rng.random() < 0.5:
            cur = await conn.execute(
                "INSERT INTO books (title, author, num_pages, owner) "
                "SELECT %s || g || repeat('b', 250), repeat('a', 200), g %% 1000 + 1, %s FROM generate_series(1, %s) g",
                (self._name(mark) + "-bulk-", owner, self.rng.randint(200, 1200)),
            )
        else:
            cur = await conn.execute(
                "DELETE FROM books WHERE id IN (SELECT id FROM books WHERE title LIKE '%%-bulk-%%' ORDER BY id LIMIT %s)",
                (self.rng.randint(200, 1200),),
            )
        if not mark:
            self.ledger.bursts += 1
        return max(cur.rowcount, 0)

    async def _big_burst(self, conn: AConn, mark: str, owner: str | None) -> int:
        if self.rng.random() < 0.6:
            cur = await conn.execute(
                "INSERT INTO t (id, owner, n, tag, payload) "
                "SELECT %s + g, %s, g %% 100, %s, repeat('x', %s) FROM generate_series(1, %s) g",
                (self.rng.randint(1 << 41, 1 << 50), owner, mark + "bulk", BIG, self.rng.randint(40, 100)),
            )
        else:
            cur = await conn.execute("DELETE FROM t WHERE id > %s AND tag = 'bulk'", (1 << 41,))
        if not mark:
            self.ledger.bursts += 1
        return max(cur.rowcount, 0)

    async def _op_t(self, conn: AConn, mark: str, owner: str | None) -> int:
        rng, p = self.rng, self.profile
        tag = mark + rng.choice(("a1", "ab", "b2", "ba", "c"))
        n = rng.randint(0, 99)
        choice = rng.random()
        if p.truncate and choice < p.truncate:
            await conn.execute("TRUNCATE t")
            if not mark:
                self.ledger.truncates += 1
            return 1
        if rng.random() < p.big_burst:
            return await self._big_burst(conn, mark, owner)
        if choice < p.key_move:  # move a hot row to a new key, or a cold one back into the hot range
            if rng.random() < 0.5:
                sql = "UPDATE t SET id = %s, n = %s WHERE id = %s"
                args: tuple[Any, ...] = (rng.randint(10_000, 1 << 40), n, rng.randint(1, HOT_T))
            else:
                sql = "UPDATE t SET id = %s, tag = %s WHERE id = (SELECT id FROM t WHERE id > %s ORDER BY random() LIMIT 1)"
                args = (rng.randint(1, HOT_T), tag, HOT_T)
            try:
                async with conn.transaction():  # the target key may be taken: only this step fails
                    cur = await conn.execute(sql, args)
            except psycopg.errors.UniqueViolation:
                return 0
            if not mark and cur.rowcount > 0:
                self.ledger.key_moves += 1
            return max(cur.rowcount, 0)
        if choice < 0.6:
            big = rng.random() < p.big
            payload = ("x" * BIG) if big else rng.choice(("", "p", None))
            key = rng.randint(1, HOT_T) if rng.random() < 0.8 else rng.randint(HOT_T + 1, 1 << 40)
            cur = await conn.execute(
                "INSERT INTO t (id, owner, n, tag, payload) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, n = EXCLUDED.n, tag = EXCLUDED.tag, "
                "payload = EXCLUDED.payload",
                (key, owner, n, tag, payload),
            )
            if big and not mark:
                self.ledger.big_rows += 1
            return max(cur.rowcount, 0)
        if choice < 0.85:
            cur = await conn.execute(
                "UPDATE t SET n = %s, owner = %s, tag = %s WHERE id = %s",
                (n, owner, tag, rng.randint(1, HOT_T)),
            )
            return max(cur.rowcount, 0)
        if rng.random() < 0.5:
            cur = await conn.execute("DELETE FROM t WHERE id = %s", (rng.randint(1, HOT_T),))
        else:
            cur = await conn.execute(
                "DELETE FROM t WHERE id = (SELECT id FROM t WHERE id > %s ORDER BY random() LIMIT 1)",
                (HOT_T,),
            )
        return max(cur.rowcount, 0)


class LongTransaction:
    """One transaction held open for the whole run, with a captured write made at its start.

    It holds every snapshot's xmin back (docs/DESIGN.md): resume windows grow, and its own
    change, committed at the very end with the oldest xid of the run, must still reach everyone.
    A Postgres restart kills it; it is then begun again.
    """

    def __init__(self, url: str, ledger: Ledger) -> None:
        self.url = url
        self.ledger = ledger
        self.conn: AConn | None = None
        self.xid: int | None = None
        self.xids: list[int] = []

    async def begin(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.url, application_name="long-transaction")
        row = await (await self.conn.execute("SELECT pg_current_xact_id()::text")).fetchone()
        assert row is not None
        self.xid = int(row[0])
        self.xids.append(self.xid)
        await self.conn.execute(
            "INSERT INTO books (title, owner, num_pages) VALUES (%s, 'alice', 700)", (f"long-{self.xid}",)
        )

    async def ensure_open(self) -> None:
        """Begin again if a Postgres restart killed it."""
        if self.conn is not None and not self.conn.broken:
            try:
                await self.conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                pass
        if self.xid is not None:
            self.ledger.rolled_back.add(self.xid)
        if self.conn is not None:
            await self.conn.close()
        await self.begin()

    async def commit(self) -> None:
        assert self.conn is not None and self.xid is not None
        try:
            await self.conn.commit()
            self.ledger.committed[self.xid] = 1
        except psycopg.OperationalError as exc:
            self.ledger.error(exc)  # e.g. "too many notifications in the NOTIFY queue" at COMMIT
            self.ledger.unknown.add(self.xid)
        finally:
            await self.conn.close()


class TwoPhase:
    """One prepared transaction: writes with the wake-up off, PREPARE, then commit or roll back later."""

    def __init__(self, writer: Writer, gid: str) -> None:
        self.writer = writer
        self.gid = gid

    async def run(self, delay: float, commit: bool) -> None:
        w, ledger = self.writer, self.writer.ledger
        xid: int | None = None
        counted = 0
        prepared = False
        try:
            async with await psycopg.AsyncConnection.connect(
                w.url, autocommit=True, application_name="two-phase"
            ) as conn:
                await conn.execute("BEGIN")
                await conn.execute("SET LOCAL rowcast.wake = off")
                row = await (await conn.execute("SELECT pg_current_xact_id()::text")).fetchone()
                assert row is not None
                xid = int(row[0])
                for _ in range(w.rng.randint(1, w.profile.max_ops)):
                    counted += await w._op(conn, mark="" if commit else ROLLBACK_MARK)
                await conn.execute(f"PREPARE TRANSACTION '{self.gid}'")  # type: ignore[arg-type]
                prepared = True
        except psycopg.Error as exc:
            ledger.error(exc)
            if xid is None:
                return
            if not prepared and not await self._pending():
                ledger.rolled_back.add(xid)  # died before PREPARE (or PREPARE failed): gone
                ledger.count(ledger.prepared, "failed before prepare")
                return
        assert xid is not None
        await asyncio.sleep(delay)
        verb = "COMMIT" if commit else "ROLLBACK"
        for _ in range(100):  # Postgres may be restarting; a prepared transaction survives that
            try:
                async with await psycopg.AsyncConnection.connect(w.url, autocommit=True) as conn:
                    await conn.execute(f"{verb} PREPARED '{self.gid}'")  # type: ignore[arg-type]
                break
            except psycopg.errors.UndefinedObject:
                break  # an earlier attempt did it and lost its connection before saying so
            except psycopg.OperationalError as exc:
                ledger.error(exc)
                await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"could not {verb} PREPARED {self.gid}")
        ledger.tags[xid] = f"two-phase {self.gid}"
        if commit:
            ledger.committed[xid] = counted
        else:
            ledger.rolled_back.add(xid)
        ledger.count(ledger.prepared, "committed" if commit else "rolled back")

    async def _pending(self) -> bool:
        for _ in range(100):
            try:
                async with await psycopg.AsyncConnection.connect(self.writer.url, autocommit=True) as conn:
                    row = await (
                        await conn.execute(
                            "SELECT count(*) FROM pg_prepared_xacts WHERE gid = %s", (self.gid,)
                        )
                    ).fetchone()
                return bool(row and row[0])
            except psycopg.OperationalError:
                await asyncio.sleep(0.2)
        raise AssertionError(f"could not look up prepared transaction {self.gid}")


DEEP_DOC = "[" * 1200 + '"deep"' + "]" * 1200  # a valid jsonb, 1,200 levels of arrays
WIDE_NUMERIC = "9" * 200 + "." + "1234567890" * 19 + "7"  # 400 digits (numeric keeps them all)


async def odd_rows(url: str, rng: random.Random, ledger: Ledger, count: int = 3) -> None:
    """Pathological rows in t at negative keys (no other writer touches them): `count` transactions,
    the first of which inserts (a deep or a wide row), the others insert, update or delete."""
    for i in range(count):
        await _odd_row(url, rng, ledger, rng.random() * (0.7 if i == 0 else 1.0))


async def _odd_row(url: str, rng: random.Random, ledger: Ledger, choice: float) -> None:
    key = -rng.randint(1, 12)
    owner, n, tag = rng.choice(OWNERS), rng.randint(0, 99), rng.choice(("a1", "ab", "b2", "c"))
    if choice < 0.35:
        kind, sql, args = (
            "deep",
            "INSERT INTO t (id, owner, n, tag, doc) VALUES (%s, %s, %s, %s, %s::jsonb) "
            "ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, n = EXCLUDED.n, tag = EXCLUDED.tag, doc = EXCLUDED.doc",
            (key, owner, n, tag, DEEP_DOC),
        )
    elif choice < 0.7:
        digits = WIDE_NUMERIC if rng.random() < 0.5 else "-" + "8" * 400
        kind, sql, args = (
            "numeric",
            "INSERT INTO t (id, owner, n, tag, big, doc) VALUES (%s, %s, %s, %s, %s::numeric, NULL) "
            "ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, n = EXCLUDED.n, big = EXCLUDED.big, doc = NULL",
            (key, owner, n, tag, digits),
        )
    elif choice < 0.85:
        kind, sql, args = "update", "UPDATE t SET n = %s, owner = %s WHERE id = %s", (n, owner, key)
    else:
        kind, sql, args = "delete", "DELETE FROM t WHERE id = %s", (key,)
    xid: int | None = None
    try:
        async with await psycopg.AsyncConnection.connect(url, application_name="odd-rows") as conn:
            row = await (await conn.execute("SELECT pg_current_xact_id()::text")).fetchone()
            assert row is not None
            xid = int(row[0])
            cur = await conn.execute(sql, args)  # type: ignore[arg-type]
            counted = max(cur.rowcount, 0)
            try:
                await conn.commit()
            except psycopg.OperationalError:
                ledger.unknown.add(xid)
                raise
            ledger.committed[xid] = counted
            ledger.tags[xid] = f"odd rows ({kind})"
            if counted:
                ledger.count(ledger.odd, kind)
    except psycopg.Error as exc:
        ledger.error(exc)
        if xid is not None and xid not in ledger.unknown:
            ledger.rolled_back.add(xid)
