"""`/healthz`: the process serves. `/readyz`: whether the relay (or a worker) can work now, and why not."""

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web

from relay.http import problem
from relay.keys import READINESS_CHECKS, SETTINGS, STORE, WORKER, RunningWorker
from relay.ops.fresh import Fresh
from relay.store.api import Store
from relay.store.records import WorkerBeat

# The worker beats every few seconds; a minute of silence means it is stuck or not running.
WORKER_SILENT_AFTER_S = 60.0
# Every beat ever recorded counts: a worker silent for a day shows as silent, not as never having run.
_EVER = datetime(1970, 1, 1, tzinfo=UTC)


async def newest_beat(store: Store) -> WorkerBeat | None:
    """The newest beat of any worker on the database (its time is the heartbeat reported), or None."""
    workers = await store.live_workers(since=_EVER)
    return max(workers, key=lambda worker: worker.beat_at, default=None)


async def worker_beats(store: Store, *, now: datetime) -> tuple[WorkerBeat | None, list[WorkerBeat]]:
    """The newest beat of any worker ever (None if none), and the live workers: those that beat within
    the silent window, oldest started first. One read of the registry, a row per worker process."""
    workers = await store.live_workers(since=_EVER)
    since = now - timedelta(seconds=WORKER_SILENT_AFTER_S)
    newest = max(workers, key=lambda worker: worker.beat_at, default=None)
    return newest, [worker for worker in workers if worker.beat_at >= since]


class Readiness:
    """The two halves of /readyz's answer, each shared by every caller while fresh (see relay.ops.fresh).

    Anyone can ask /readyz, and the database's check commits a write: asked a thousand times a second, it
    still runs once a second, and a store that stops taking writes shows within that second.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.intake: Fresh[list[str]] = Fresh(clock=clock)
        self.delivery: Fresh[list[str]] = Fresh(clock=clock)


READINESS = web.AppKey("readiness", Readiness)

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Every reason the relay cannot work now; `?scope=intake` asks only whether webhooks can be taken."""
    if request.query.get("scope", "intake") != "intake":
        # A mistyped scope must not pass for the full check, nor the full check for a mistyped scope.
        reason = "must be intake, or absent for the full check"
        return problem(
            400,
            "Bad Request",
            f"scope: {reason}",
            field="scope",
            errors=[{"field": "scope", "detail": reason}],
        )
    app = request.app
    problems = await app[READINESS].intake.get(lambda: _intake_problems(app))
    if request.query.get("scope") != "intake" and not problems:
        problems = await app[READINESS].delivery.get(lambda: _delivery_problems(app))
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def _intake_problems(app: web.Application) -> list[str]:
    problems: list[str] = []
    for check in app[READINESS_CHECKS]:
        problems += await check()
    return problems


async def _delivery_problems(app: web.Application) -> list[str]:
    store = app[STORE]
    now = datetime.now(UTC)
    problems = []
    # Any live worker will do: they share the work. Silence shows only when none is left.
    beat, workers = await worker_beats(store, now=now)
    if not workers:
        if beat is None:
            problems.append("no live worker on this database (start `relay worker` or `relay serve`)")
        else:
            silent = (now - beat.beat_at).total_seconds()
            problems.append(f"worker silent for {silent:.0f} s (last heartbeat {beat.beat_at.isoformat()})")
            workers = [beat]
    # A pause holds for every worker; the reason is a whole sentence ("Quivo refused the credentials, 401").
    paused = next((worker.paused_reason for worker in workers if worker.paused_reason is not None), None)
    if paused is not None:
        problems.append(f"deliveries paused: {paused}")
    age = (await store.read_backlog(now=now)).age_s
    limit = app[SETTINGS].relay_ready_max_backlog_age_s
    if age is not None and age > limit:
        problems.append(
            f"oldest undelivered rating waited {age:.0f} s since accepted "
            f"(over RELAY_READY_MAX_BACKLOG_AGE_S={limit:g})"
        )
    return problems


async def worker_readyz(request: web.Request) -> web.Response:
    """`relay worker`'s /readyz: whether this worker can deliver now (its store takes writes, it is not
    paused, its loop goes round); the relay's backlog and other workers are the web's /readyz's concern."""
    app = request.app
    problems = await app[READINESS].intake.get(lambda: _intake_problems(app))
    problems = problems + _worker_problems(app[WORKER], now=time.time())
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


def _worker_problems(worker: RunningWorker, *, now: float) -> list[str]:
    problems = []
    if worker.last_heartbeat is None:
        problems.append("worker not started yet")
    elif (silent := now - worker.last_heartbeat) > WORKER_SILENT_AFTER_S:
        problems.append(f"worker silent for {silent:.0f} s")
    if worker.paused_reason is not None:
        problems.append(f"deliveries paused: {worker.paused_reason}")
    return problems


worker_routes = [web.get("/healthz", healthz), web.get("/readyz", worker_readyz)]
