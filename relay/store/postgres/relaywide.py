"""Relay-wide decisions every worker shares: heartbeats, duties, send slots and pauses per Quivo account."""

from datetime import datetime

from relay.store.postgres.connection import Conn
from relay.store.records import AccountPause, WorkerBeat


async def beat(conn: Conn, worker: WorkerBeat) -> None:
    """Record that this worker is alive (and why it holds deliveries, if it does)."""
    await conn.execute(
        "INSERT INTO workers (worker_id, host, pid, started_at, beat_at, paused_reason) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (worker_id) DO UPDATE SET host = excluded.host, "
        "pid = excluded.pid, started_at = excluded.started_at, beat_at = excluded.beat_at, "
        "paused_reason = excluded.paused_reason",
        worker.worker_id,
        worker.host,
        worker.pid,
        worker.started_at,
        worker.beat_at,
        worker.paused_reason,
    )


async def live_workers(conn: Conn, *, since: datetime) -> list[WorkerBeat]:
    """Workers that beat at or after `since`, oldest started first."""
    rows = await conn.fetch(
        "SELECT worker_id, host, pid, started_at, beat_at, paused_reason FROM workers "
        "WHERE beat_at >= $1 ORDER BY started_at, worker_id",
        since,
    )
    return [WorkerBeat(**dict(row)) for row in rows]


async def take_duty(conn: Conn, duty: str, holder: str, *, now: datetime, until: datetime) -> bool:
    """One holder per duty by its primary key; the same holder extends, a hold run out is taken over."""
    taken = await conn.fetchval(
        "INSERT INTO duties (duty, holder, held_until) VALUES ($1, $2, $4) "
        "ON CONFLICT (duty) DO UPDATE SET holder = excluded.holder, held_until = excluded.held_until "
        "WHERE duties.held_until <= $3 OR duties.holder = excluded.holder "
        "RETURNING holder",
        duty,
        holder,
        now,
        until,
    )
    return taken is not None


# Every worker's calls take their slot from one row: reserved in batches, one commit (one wait on the
# row's lock and the flush) serves many calls.
_RESERVE = """
INSERT INTO account_state (account, next_slot_at)
VALUES ($1, $2::timestamptz + make_interval(secs => $3::float8 * $4::int))
ON CONFLICT (account) DO UPDATE SET next_slot_at =
    GREATEST(account_state.next_slot_at, $2::timestamptz) + make_interval(secs => $3::float8 * $4::int)
RETURNING next_slot_at - make_interval(secs => $3::float8 * $4::int)
"""

# The account, now, the spacing between its calls, and how many slots are reserved together.
SlotRequest = tuple[str, datetime, float, int]


async def reserve_send_slots(conn: Conn, requests: list[SlotRequest]) -> list[datetime]:
    """For each request in order, the next free slot at or after its `now` (the first of its `count`);
    the one after them starts `spacing_s` later, for every worker. One pipelined round trip."""
    slots = [row[0] for row in await conn.fetchmany(_RESERVE, requests)]
    assert all(isinstance(slot, datetime) for slot in slots)
    return slots


async def pause_account(conn: Conn, pause: AccountPause) -> None:
    """Every worker holds calls to the account until the pause's `until` (or until it is lifted)."""
    await conn.execute(
        "INSERT INTO account_state (account, pause_reason, paused_until) VALUES ($1, $2, $3) "
        "ON CONFLICT (account) DO UPDATE "
        "SET pause_reason = excluded.pause_reason, paused_until = excluded.paused_until",
        pause.account,
        pause.reason,
        pause.until,
    )


async def account_pauses(conn: Conn, *, now: datetime) -> list[AccountPause]:
    """The pauses in force at `now`."""
    rows = await conn.fetch(
        "SELECT account, pause_reason, paused_until FROM account_state "
        "WHERE pause_reason IS NOT NULL AND (paused_until IS NULL OR paused_until > $1) ORDER BY account",
        now,
    )
    return [AccountPause(row["account"], row["pause_reason"], row["paused_until"]) for row in rows]
