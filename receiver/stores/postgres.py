"""PostgreSQL store (asyncpg) for several replicas: compare-and-set writes, claims with SKIP LOCKED,
and LISTEN/NOTIFY to wake every replica's background work when another commits something to do."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import anyio.abc
import asyncpg
import structlog

from receiver import credits
from receiver.errors import ConfigError, ReceiverError
from receiver.models import Event, Job, JobState, Transition
from receiver.registry import redact
from receiver.resource import ResourceBase
from receiver.stores import migrations
from receiver.stores.base import Change, Delivery, DeliveryState, Overview, StoreFigures, UpstreamLimits
from receiver.stores.feed import FEED_COLUMNS, FeedEntry, Signal, entry_from_row
from receiver.stores.postgres_batch import Completion, CompletionBatcher, Update, UpdateBatcher
from receiver.stores.rows import (
    CREDITS_COMMITTED,
    CREDITS_SPENT,
    FINAL_STATE_NAMES,
    JOB_TABLES,
    JOBS_BY_STATE,
    OUTBOX_BY_SINK,
    SELECT_DELIVERIES,
    UPSTREAM_SLOTS,
    active_upstream,
    count_queries,
    delivery_from_row,
    figures_from_rows,
    job_columns,
    job_doc,
    job_from_doc,
    new_delivery,
)
from receiver.stores.urgency import is_urgent

if TYPE_CHECKING:
    from receiver.credits import CreditBudget

log = structlog.get_logger("receiver.stores.postgres")

# Each bounded, so a server that stopped answering makes a call fail (StoreUnavailable), never hang.
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0
ACQUIRE_TIMEOUT_S = 10.0

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
FEED_CHANNEL = "kontext_receiver_feed"  # the payload names the schema whose feed grew
CHANGES = frozenset(Change)
LISTEN_RETRY_S = 1.0  # between attempts to listen again after the connection was lost
# The document's fields a daily credit cap counts (the index `jobs_submitted` is on `submitted_at`).
_CREDITS = {
    "cost": "(doc->'cost'->>'credits')::float8",
    "submitted_at": "(doc->>'submitted_at')::float8",
    "estimate": "(doc->>'credit_estimate')::float8",
}
_SPENT = CREDITS_SPENT.format(since="$1", until="$2", **_CREDITS)
_COMMITTED = CREDITS_COMMITTED.format(since="$1", until="$2", now="$3", **_CREDITS)


class PostgresStore(ResourceBase):
    # What an unreachable or restarting server raises (besides OSError): see `stores.guard`.
    unavailable_errors = (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.OperatorInterventionError,
        # A connection left mid-operation when the server went away (raised as the pool resets it).
        asyncpg.InternalClientError,
    )

    def __init__(self, dsn: str, schema: str | None = None, *, max_connections: int = 10) -> None:
        self.dsn = dsn
        self.schema = schema
        self.max_connections = max_connections
        self.applied: list[str] = []  # the migrations `open` applied
        self._pool: asyncpg.Pool | None = None
        self._feed_listener: asyncpg.Connection | None = None  # LISTENs for FEED_CHANNEL
        self._signal = Signal()
        self._schema_in_use = schema or ""  # the tables' schema (found at `open` when not named)
        self._listening: asyncpg.Connection | None = None  # while `watch` is open
        self._reporting = False  # this replica reports the store's figures (see `figures`)
        self._batcher = UpdateBatcher(self._acquire, self._update_alone)
        self._completions = CompletionBatcher(self._acquire, self._complete_alone)

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """`postgresql://user:password@host:port/db` (or `postgres://`); `?schema=NAME` puts every table
        in that schema, created if missing. Other query parameters go to asyncpg (`sslmode`, ...)."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError(f"not a PostgreSQL URL: {redact(url)!r}")
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for key, value in query if key == "schema"]
        if len(schemas) > 1 or not all(_SCHEMA_NAME.fullmatch(name) for name in schemas):
            raise ConfigError(f"schema= takes one lower-case SQL name ([a-z_][a-z0-9_]*): {redact(url)!r}")
        rest = urlencode([(key, value) for key, value in query if key != "schema"])
        return cls(parts._replace(query=rest).geturl(), schemas[0] if schemas else None)

    async def open(self) -> None:
        settings = {"search_path": f'"{self.schema}"'} if self.schema else None
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.max_connections,
                server_settings=settings,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
            )
            try:
                async with pool.acquire() as conn:
                    self.applied = await apply_migrations(conn, self.schema)
                    self._schema_in_use = await conn.fetchval("SELECT current_schema()")
                await self._listen_for_feed()
            except BaseException:
                await pool.close()
                raise
        except (OSError, asyncpg.PostgresError) as exc:
            raise ReceiverError(f"cannot open the PostgreSQL store {redact(self.dsn)}: {exc}") from exc
        if self.applied:
            log.info("store.migrated", schema=self.schema, applied=self.applied)
        self._pool = pool

    async def _listen_for_feed(self) -> None:
        """LISTEN for feed growth on a connection of its own (again, after it was lost)."""
        if self._feed_listener is None or self._feed_listener.is_closed():
            listener = await asyncpg.connect(self.dsn)
            await listener.add_listener(FEED_CHANNEL, self._on_feed_notify)
            self._feed_listener = listener

    def _on_feed_notify(self, conn: object, pid: int, channel: str, schema: str) -> None:
        if schema == self._schema_in_use:
            self._signal.notify()

    def _acquire(self) -> Any:
        return self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S)

    async def aclose(self) -> None:
        await self._batcher.aclose()
        await self._completions.aclose()
        if self._feed_listener is not None:
            listener, self._feed_listener = self._feed_listener, None
            await listener.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def batches_committed(self) -> int:
        """Transactions the group commit of updates has committed (see `postgres_batch`)."""
        return self._batcher.committed

    @property
    def completion_batches_committed(self) -> int:
        """Transactions the group commit of delivery completions has committed."""
        return self._completions.committed

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open; use `async with store:`")
        return self._pool

    async def insert(self, job: Job) -> Job:
        async with self._acquire() as conn, conn.transaction():
            # ON CONFLICT rather than look-then-insert: two requests with one key may race.
            inserted = await conn.fetchval(
                "INSERT INTO jobs (id, state, model, version, idempotency_key, due_at, submitting_until,"
                " created_at, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                job.id,
                *job_columns(job),
                job.created_at,
                job_doc(job),
            )
            if inserted is None:
                doc = await conn.fetchval(
                    "SELECT doc FROM jobs WHERE idempotency_key = $1", job.idempotency_key
                )
                return job_from_doc(doc)
        return job

    async def get(self, job_id: str) -> Job | None:
        doc = await self.pool.fetchval("SELECT doc FROM jobs WHERE id = $1", job_id)
        return job_from_doc(doc) if doc is not None else None

    async def keyed(self, idempotency_key: str) -> Job | None:
        doc = await self.pool.fetchval("SELECT doc FROM jobs WHERE idempotency_key = $1", idempotency_key)
        return job_from_doc(doc) if doc is not None else None

    async def legacy_input(self, job_id: str) -> str | None:
        image = await self.pool.fetchval("SELECT image FROM job_inputs WHERE job_id = $1", job_id)
        return str(image) if image is not None else None

    async def save(
        self, job: Job, *, event: Event | None = None, sinks: Sequence[str] = (), drop_input: bool = False
    ) -> Job | None:
        try:
            async with self._acquire() as conn, conn.transaction():
                return await _save(conn, job, event, sinks, drop_input)
        except asyncpg.UniqueViolationError:  # the event exists already: another writer finished the job
            return None

    async def update(
        self,
        job_id: str,
        change: Callable[[Job], Transition | None],
        sinks: Sequence[str] = (),
        *,
        claimed_until: float | None = None,
    ) -> tuple[Job | None, bool]:
        """Group commit: updates arriving together share a transaction (see `postgres_batch`)."""
        update = Update(job_id, change, tuple(sinks), claimed_until)
        return await self._batcher.run(update, urgent=is_urgent())

    async def _update_alone(self, update: Update) -> tuple[Job | None, bool]:
        job_id, change = update.job_id, update.change
        async with self._acquire() as conn, conn.transaction():
            # FOR UPDATE: a concurrent update of this job waits for ours, then sees its result.
            doc = await conn.fetchval("SELECT doc FROM jobs WHERE id = $1 FOR UPDATE", job_id)
            if doc is None:
                return None, False
            job = job_from_doc(doc)
            transition = change(job)
            if transition is None:
                return job, False
            event, drop = transition.event, transition.drop_input
            saved = await _save(conn, transition.job, event, update.sinks, drop, update.claimed_until)
            return (saved, True) if saved is not None else (job, False)

    async def claim(
        self,
        states: Collection[JobState],
        now: float,
        lease_s: float,
        limit: int,
        model: str | None = None,
    ) -> list[Job]:
        async with self._acquire() as conn, conn.transaction():
            return await _claim(conn, states, now, limit, model, lambda job: job.claimed(now, lease_s))

    async def claim_submits(
        self, now: float, lease_s: float, limits: UpstreamLimits, budget: CreditBudget | None = None
    ) -> list[Job]:
        # Asked first without the lock: with no job waiting, or every slot taken, a wake-up takes none.
        # The state written out, not a parameter: a generic plan blind to it would read the table
        # from the start looking for one row (with a million settled jobs, a million rows).
        due = "SELECT 1 FROM jobs WHERE state = 'created' AND due_at <= $1 LIMIT 1"
        if await self.pool.fetchval(due, now) is None:
            return []
        active_sql = UPSTREAM_SLOTS.format(now="$1")
        if limits.room(active_upstream(await self.pool.fetch(active_sql, now)))[0] <= 0:
            return []
        async with self._acquire() as conn, conn.transaction():
            # One submit claim at a time in all replicas: the count and the claims it allows are one
            # step, and the count sees every claim committed before (READ COMMITTED, after the lock).
            lock = f"kontext-receiver.submit:{self._schema_in_use}"
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock)
            free, room = limits.room(active_upstream(await conn.fetch(active_sql, now)))
            spent = 0.0 if budget is None else await conn.fetchval(_COMMITTED, budget.start, budget.end, now)
            claimed: list[Job] = []
            for model, slots in room:
                wanted = min(slots, free - len(claimed))
                # `UpstreamLimits.fill` with `base.claims_within`, awaited: jobs held make room to look
                # at the ones after them.
                while wanted > 0:
                    jobs = await _due(conn, {JobState.CREATED}, now, wanted, model)
                    allotment = credits.allot(budget, spent, jobs, now, lease_s)
                    spent = allotment.spent
                    written = await _write_claims(conn, allotment.claimed + allotment.held)
                    claimed += written[: len(allotment.claimed)]
                    wanted = wanted - len(allotment.claimed) if allotment.held else 0
            return claimed

    async def count(self, states: Collection[JobState], model: str | None = None) -> int:
        total = 0
        for select, part in count_queries(states):
            sql = select + " state = ANY($1::text[])" + (" AND model = $2" if model else "")
            total += int(await self.pool.fetchval(sql, part, *([model] if model else [])))
        return total

    async def credits_spent(self, since: float, until: float) -> float:
        return float(await self.pool.fetchval(_SPENT, since, until))

    async def list_jobs(
        self, *, state: JobState | None = None, dead_letter: bool = False, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        sql = "SELECT doc FROM jobs WHERE true"
        args: list[Any] = []
        if state is not None:
            args.append(state.value)
            sql += f" AND state = ${len(args)}"
        if dead_letter:
            sql += " AND id IN (SELECT event_id FROM deliveries WHERE state = 'dead')"
        sql += f" ORDER BY created_at DESC, id DESC LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}"
        rows = await self.pool.fetch(sql, *args, limit, offset)
        return [job_from_doc(row["doc"]) for row in rows]

    async def event(self, event_id: str) -> Event | None:
        body = await self.pool.fetchval("SELECT body FROM events WHERE id = $1", event_id)
        return Event.from_dict(json.loads(body)) if body is not None else None

    async def deliveries(self, event_id: str) -> list[Delivery]:
        rows = await self.pool.fetch(SELECT_DELIVERIES + " WHERE event_id = $1 ORDER BY sink", event_id)
        return [delivery_from_row(row) for row in rows]

    async def deliveries_of(self, event_ids: Collection[str]) -> dict[str, list[Delivery]]:
        found: dict[str, list[Delivery]] = {event_id: [] for event_id in event_ids}
        if found:
            sql = SELECT_DELIVERIES + " WHERE event_id = ANY($1::text[]) ORDER BY sink"
            for row in await self.pool.fetch(sql, list(found)):
                delivery = delivery_from_row(row)
                found[delivery.event_id].append(delivery)
        return found

    async def claim_deliveries(
        self, now: float, lease_s: float, limit: int, sinks: Collection[str]
    ) -> list[Delivery]:
        async with self._acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                SELECT_DELIVERIES + " WHERE state = $1 AND next_at <= $2 AND sink = ANY($4::text[])"
                " ORDER BY next_at, event_id, sink LIMIT $3 FOR UPDATE SKIP LOCKED",
                DeliveryState.PENDING.value,
                now,
                limit,
                list(sinks),
            )
            claimed = [delivery_from_row(row).claimed(now, lease_s) for row in rows]
            if claimed:
                await conn.executemany(
                    "UPDATE deliveries SET attempts = $3, next_at = $4 WHERE event_id = $1 AND sink = $2",
                    [(d.event_id, d.sink, d.attempts, d.next_at) for d in claimed],
                )
        return claimed

    async def save_delivery(self, delivery: Delivery, *, expected_attempts: int) -> bool:
        async with self._acquire() as conn:
            return await _save_delivery(conn, delivery, expected_attempts)

    async def complete_delivery(
        self, delivery: Delivery, *, expected_attempts: int, then: Callable[[Job], Transition | None]
    ) -> bool:
        """Group commit: completions arriving together share a transaction (see `postgres_batch`)."""
        return await self._completions.run(Completion(delivery, expected_attempts, then))

    async def _complete_alone(self, completion: Completion) -> bool:
        delivery, expected_attempts, then = completion.delivery, completion.expected_attempts, completion.then
        async with self._acquire() as conn, conn.transaction():
            if not await _save_delivery(conn, delivery, expected_attempts):
                return False
            # The job's row lock serializes the sinks of one event finishing at the same time.
            doc = await conn.fetchval("SELECT doc FROM jobs WHERE id = $1 FOR UPDATE", delivery.event_id)
            undelivered = await conn.fetchval(
                "SELECT 1 FROM deliveries WHERE event_id = $1 AND state <> $2 LIMIT 1",
                delivery.event_id,
                DeliveryState.DELIVERED.value,
            )
            transition = then(job_from_doc(doc)) if doc is not None and undelivered is None else None
            if transition is not None:
                await _save(conn, transition.job, transition.event, (), transition.drop_input)
            return True

    async def redeliver(self, event_id: str, sinks: Sequence[str], now: float) -> int:
        async with self._acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM events WHERE id = $1", event_id) is None:
                return 0
            await conn.executemany(
                "INSERT INTO deliveries (event_id, sink, state, attempts, next_at) VALUES ($1, $2, $3, 0, $4)"
                " ON CONFLICT (event_id, sink) DO UPDATE SET state = excluded.state, attempts = 0,"
                " next_at = excluded.next_at, last_error = NULL, delivered_at = NULL",
                [(event_id, sink, DeliveryState.PENDING.value, now) for sink in sorted(sinks)],
            )
        return len(sinks)

    async def feed(
        self, after: int, *, job_id: str | None = None, types: Collection[str] = (), limit: int = 100
    ) -> list[FeedEntry]:
        await self._listen_for_feed()
        await self._number()
        sql = f"SELECT {FEED_COLUMNS} FROM feed WHERE seq > $1"  # noqa: S608 - constants and $n only
        args: list[Any] = [after]
        if job_id is not None:
            args.append(job_id)
            sql += f" AND job_id = ${len(args)}"
        if types:
            args.append(list(types))
            sql += f" AND type = ANY(${len(args)}::text[])"
        args.append(limit)
        rows = await self.pool.fetch(sql + f" ORDER BY seq LIMIT ${len(args)}", *args)
        return [entry_from_row(tuple(row)) for row in rows]

    async def _number(self) -> None:
        """Number the committed feed rows that have no number yet, under a lock: rows committed later
        get higher numbers, even when their transaction began first."""
        if await self.pool.fetchval("SELECT 1 FROM feed WHERE seq IS NULL LIMIT 1") is None:
            return
        async with self._acquire() as conn, conn.transaction():
            lock = f"kontext-receiver.feed:{self._schema_in_use}"
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock)
            await conn.execute(
                "WITH numbered AS (SELECT id, nextval('feed_seq') AS seq"
                " FROM (SELECT id FROM feed WHERE seq IS NULL ORDER BY id) AS waiting)"
                " UPDATE feed SET seq = numbered.seq FROM numbered WHERE feed.id = numbered.id"
            )

    async def feed_head(self) -> int:
        await self._number()
        return int(await self.pool.fetchval("SELECT coalesce(max(seq), 0) FROM feed"))

    def feed_changed(self) -> anyio.Event:
        return self._signal.changed()

    async def overview(self, now: float) -> Overview:
        states = await self.pool.fetch(JOBS_BY_STATE)  # settled jobs from their counters, not a scan
        recent = await self.pool.fetchval(
            "SELECT count(*) FROM feed WHERE body IS NOT NULL AND at >= $1", now - 60
        )
        dead = await self.pool.fetchval(
            "SELECT count(DISTINCT event_id) FROM deliveries WHERE state = $1", DeliveryState.DEAD.value
        )
        oldest = await self.pool.fetch(
            "SELECT d.sink, min((j.doc->>'finished_at')::float8) FROM deliveries d"
            " JOIN jobs j ON j.id = d.event_id WHERE d.state <> $1 GROUP BY d.sink",
            DeliveryState.DELIVERED.value,
        )
        return Overview(
            jobs_per_state={state.value: 0 for state in JobState} | {row[0]: int(row[1]) for row in states},
            events_last_minute=int(recent),
            dead_letters=int(dead),
            oldest_undelivered={row[0]: float(row[1] or 0.0) for row in oldest},
        )

    @asynccontextmanager
    async def watch(self, on_change: Callable[[Change], None]) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            await tg.start(self._listen, on_change)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    async def _listen(
        self, on_change: Callable[[Change], None], *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """LISTEN on a connection of its own, again after it is lost (meanwhile the background loops
        still look at the store every second or so). Started once the first try is over."""

        def notified(conn: object, pid: int, channel: str, payload: str) -> None:
            schema, _, change = payload.partition(" ")
            # Replicas of other schemas share the channel; a newer release may notify more changes.
            if schema == self._schema_in_use and change in CHANGES:
                on_change(Change(change))

        while True:
            try:
                conn = await asyncpg.connect(self.dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("store.listen_failed", error=str(exc))
                task_status.started()
            else:
                await self._listen_until_lost(conn, notified, task_status)
                log.warning("store.listen_lost")
            task_status = anyio.TASK_STATUS_IGNORED
            await anyio.sleep(LISTEN_RETRY_S)

    async def _listen_until_lost(
        self, conn: asyncpg.Connection, notified: Callable[..., None], task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        lost = anyio.Event()
        try:
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(migrations.CHANNEL, notified)
            self._listening = conn
            task_status.started()
            await lost.wait()
        finally:
            self._listening, self._reporting = None, False
            with anyio.CancelScope(shield=True):
                await conn.close(timeout=5)

    async def figures(self) -> StoreFigures | None:
        if not await self._reports_figures():
            return None
        async with self._acquire() as conn:
            jobs = await conn.fetch(JOBS_BY_STATE)
            outbox = await conn.fetch(OUTBOX_BY_SINK.format(time="e.body->>'time'"))
        return figures_from_rows(jobs, outbox)

    async def _reports_figures(self) -> bool:
        """One replica reports the store's figures: the first whose listening connection takes the
        advisory lock. A replica that stops or loses its connection lets the lock go with it, and the
        next to ask takes over. Replicas that do not watch the store (no background work) never report."""
        conn = self._listening
        if conn is not None and not self._reporting:
            key = f"kontext-receiver.figures:{self._schema_in_use}"
            self._reporting = await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key)
        return self._reporting

    async def expired_jobs(self, before: float, limit: int) -> list[Job]:
        rows = await self.pool.fetch(
            "SELECT doc FROM jobs WHERE created_at < $1 AND state = ANY($2::text[]) AND NOT EXISTS"
            " (SELECT 1 FROM deliveries WHERE event_id = jobs.id AND state = $3)"
            " ORDER BY created_at, id LIMIT $4",
            before,
            FINAL_STATE_NAMES,
            DeliveryState.PENDING.value,
            limit,
        )
        return [job_from_doc(row["doc"]) for row in rows]

    async def delete_jobs(self, job_ids: Collection[str]) -> int:
        ids = list(job_ids)
        status = "DELETE 0"
        async with self._acquire() as conn, conn.transaction():
            for table, column in JOB_TABLES:
                status = await conn.execute(f"DELETE FROM {table} WHERE {column} = ANY($1::text[])", ids)  # noqa: S608
        return int(status.split()[-1])


async def _claim(
    conn: asyncpg.Connection,
    states: Collection[JobState],
    now: float,
    limit: int,
    model: str | None,
    claimed_as: Callable[[Job], Job],
) -> list[Job]:
    return await _write_claims(conn, [claimed_as(job) for job in await _due(conn, states, now, limit, model)])


async def _due(
    conn: asyncpg.Connection, states: Collection[JobState], now: float, limit: int, model: str | None
) -> list[Job]:
    """Up to `limit` due jobs in `states` (and of `model`), earliest first, locked for this transaction."""
    sql = "SELECT doc FROM jobs WHERE state = ANY($1::text[]) AND due_at <= $2"
    args: list[Any] = [_states(states), now]
    if model is not None:
        args.append(model)
        sql += f" AND model = ${len(args)}"
    args.append(limit)
    # SKIP LOCKED: a row another replica is claiming right now is passed over, not waited for.
    sql += f" ORDER BY due_at, created_at, id LIMIT ${len(args)} FOR UPDATE SKIP LOCKED"
    return [job_from_doc(row["doc"]) for row in await conn.fetch(sql, *args)]


async def _write_claims(conn: asyncpg.Connection, jobs: list[Job]) -> list[Job]:
    """Store claims (or holds) of `jobs`, each as a new version of the one stored."""
    taken = [dataclasses.replace(job, version=job.version + 1) for job in jobs]
    if taken:
        await conn.executemany(
            "UPDATE jobs SET version = $2, due_at = $3, submitting_until = $4, doc = $5 WHERE id = $1",
            [(job.id, job.version, *job_columns(job)[4:], job_doc(job)) for job in taken],
        )
    return taken


async def _save(
    conn: asyncpg.Connection,
    job: Job,
    event: Event | None,
    sinks: Sequence[str],
    drop_input: bool,
    claimed_until: float | None = None,
) -> Job | None:
    saved = dataclasses.replace(job, version=job.version + 1)
    status = await conn.execute(
        "UPDATE jobs SET state = $3, model = $4, version = $5, idempotency_key = $6, due_at = $7,"
        " submitting_until = $8, doc = $9 WHERE id = $1 AND version = $2",
        job.id,
        job.version,
        *job_columns(saved),
        job_doc(saved),
    )
    if status != "UPDATE 1":
        return None
    if drop_input:
        await conn.execute("DELETE FROM job_inputs WHERE job_id = $1", job.id)
    if event is not None:
        await conn.execute(
            "INSERT INTO events (id, body) VALUES ($1, $2)", event.id, json.dumps(event.to_dict())
        )
        await conn.executemany(
            "INSERT INTO deliveries (event_id, sink, state, attempts, next_at)"
            " VALUES ($1, $2, 'pending', $3, $4)",
            [(event.id, sink, *new_delivery(claimed_until)) for sink in sinks],
        )
    return saved


async def _save_delivery(conn: asyncpg.Connection, delivery: Delivery, expected_attempts: int) -> bool:
    status = await conn.execute(
        "UPDATE deliveries SET state = $4, attempts = $5, next_at = $6, last_error = $7, delivered_at = $8"
        " WHERE event_id = $1 AND sink = $2 AND attempts = $3",
        delivery.event_id,
        delivery.sink,
        expected_attempts,
        delivery.state.value,
        delivery.attempts,
        delivery.next_at,
        delivery.last_error,
        delivery.delivered_at,
    )
    return bool(status == "UPDATE 1")


async def migrate(url: str) -> list[str]:
    """Bring the database (and schema) `url` names up to date; return the migrations applied."""
    async with PostgresStore.from_url(url) as store:
        return store.applied


async def apply_migrations(conn: asyncpg.Connection, schema: str | None) -> list[str]:
    """Apply the pending migrations in one transaction, under an advisory lock: replicas starting
    together wait for the first, then find nothing left to do."""
    async with conn.transaction():
        lock = f"kontext-receiver.migrate:{schema or ''}"
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lock)
        if schema is not None:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')  # a checked name, not input SQL
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations")}
        applied = []
        for name, sql in migrations.POSTGRES:
            if name not in done:
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                applied.append(name)
        return applied


def _states(states: Collection[JobState]) -> list[str]:
    return [JobState(state).value for state in states]
