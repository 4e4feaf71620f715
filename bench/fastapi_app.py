"""A FastAPI + aiosqlite receiver written the way public ones commonly are: a reference, not a model.

FastAPI validates the body against a pydantic model before the handler runs (422 otherwise); the handler
checks the bearer token, inserts on the one connection the app opened at start, commits and answers 202.
uvicorn serves it with its defaults, the access log included. As every reference, it commits with
`synchronous=FULL` before answering. Its payload models are the naive receiver's, written again: each
reference is a script that stands alone, as a third party's would.
"""

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request
from pydantic import BaseModel

INSERT = "INSERT INTO ratings (merchant_id, rating_id, stars, external_id, body) VALUES (?, ?, ?, ?, ?)"


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


def make_app(database: str, token: str) -> FastAPI:
    """The receiver, storing into `database` the webhooks that carry `token`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with aiosqlite.connect(database) as db:
            app.state.db = db
            await db.execute("PRAGMA synchronous = FULL")  # as every receiver here: on disk before the 202
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(
                "CREATE TABLE IF NOT EXISTS ratings (id INTEGER PRIMARY KEY, merchant_id INTEGER, "
                "rating_id INTEGER, stars INTEGER, external_id TEXT, body BLOB, "
                "UNIQUE (merchant_id, rating_id))"
            )
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/webhooks/bringg", status_code=202)
    async def receive(
        webhook: Webhook, request: Request, authorization: str | None = Header(default=None)
    ) -> dict[str, str]:
        if authorization != f"Bearer {token}":
            raise HTTPException(status_code=401, detail="unauthorized")
        body = await request.body()
        rating = webhook.rating
        row = (webhook.merchant_id, rating.id, rating.rating, rating.task.external_id, body)
        db = request.app.state.db
        await db.execute(INSERT, row)
        await db.commit()
        return {"status": "accepted"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(args.database, args.token), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
