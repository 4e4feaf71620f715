"""The naive receiver: aiohttp + pydantic + aiosqlite, one commit per webhook (what an afternoon gives).

With `--commit batch` it is the group-commit probe: the same, with one commit for whatever arrived while
the last commit ran (what group commit alone allows, with none of the relay's other work).
"""

import argparse
import asyncio
from collections.abc import AsyncIterator

import aiosqlite
from aiohttp import web
from pydantic import BaseModel, ValidationError

DB, TOKEN = web.AppKey("db", aiosqlite.Connection), web.AppKey("token", str)
INSERT = "INSERT INTO ratings (merchant_id, rating_id, stars, external_id, body) VALUES (?, ?, ?, ?, ?)"
Row = tuple[int, int, int, str, bytes]


class Task(BaseModel):
    external_id: str


class Rating(BaseModel):
    id: int
    rating: int
    comment: str | None = None
    task: Task


class Webhook(BaseModel):
    webhook_type: str
    merchant_id: int
    rating: Rating


class GroupCommit:
    """Rows wait while a commit runs; the next commit takes all of them at once."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.waiting: list[tuple[Row, asyncio.Future[None]]] = []
        self.running = False
        self.task: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference

    async def store(self, row: Row) -> None:
        done = asyncio.get_running_loop().create_future()
        self.waiting.append((row, done))
        if not self.running:
            self.running = True
            self.task = asyncio.get_running_loop().create_task(self.commit())
        await done

    async def commit(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting, []
            try:
                await self.db.executemany(INSERT, [row for row, _ in batch])
                await self.db.commit()
            except aiosqlite.Error as error:
                await self.db.rollback()
                for _, done in batch:
                    done.set_exception(error)
                continue
            for _, done in batch:
                done.set_result(None)
        self.running = False


GROUP = web.AppKey("group", GroupCommit)


async def take(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != f"Bearer {request.app[TOKEN]}":
        return web.json_response({"error": "unauthorized"}, status=401)
    body = await request.read()
    try:
        hook = Webhook.model_validate_json(body)
    except ValidationError:
        return web.json_response({"error": "invalid"}, status=400)
    row = (hook.merchant_id, hook.rating.id, hook.rating.rating, hook.rating.task.external_id, body)
    if GROUP in request.app:
        await request.app[GROUP].store(row)
    else:
        await request.app[DB].execute(INSERT, row)
        await request.app[DB].commit()
    return web.json_response({"status": "accepted"}, status=202)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--commit", choices=("each", "batch"), default="each")
    args = parser.parse_args()

    async def database(app: web.Application) -> AsyncIterator[None]:
        app[DB] = db = await aiosqlite.connect(args.database)
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")  # as the relay: on disk before the 202
        await db.execute(
            "CREATE TABLE IF NOT EXISTS ratings (id INTEGER PRIMARY KEY, merchant_id INTEGER, "
            "rating_id INTEGER, stars INTEGER, external_id TEXT, body BLOB, UNIQUE (merchant_id, rating_id))"
        )
        if args.commit == "batch":
            app[GROUP] = GroupCommit(db)
        yield
        await db.close()

    app = web.Application()
    app[TOKEN] = args.token
    app.cleanup_ctx.append(database)
    app.router.add_post("/webhooks/bringg", take)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
