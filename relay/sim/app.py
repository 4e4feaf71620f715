"""The simulated Quivo over HTTP: login, customer inquiries, ratings, and a `/_sim/` control API."""

import asyncio
import json
import math
from typing import Any, Final, NamedTuple

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relay.sim.state import INT64_MAX, NO_ANSWER, Inquiry, SimState, TokenStatus

SIM_STATE: Final = web.AppKey("sim_state", SimState)

# Routes that behave like Quivo (faults, auth, counters); the control API stays outside all of that.
_QUIVO_ROUTES: Final = frozenset({"login", "get_inquiry", "post_rating"})
_ERROR_REASONS: Final = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class InvalidBody(ValueError):
    """A request body Quivo's gateway refuses; the text is the plain-text 400 answer."""


class RatingRequest(NamedTuple):
    rating: float
    rating_message: str | None


class FaultsUpdate(BaseModel):
    """Body of `PUT /_sim/faults`: any subset of the knobs; null leaves a knob as it is."""

    model_config = ConfigDict(extra="forbid", strict=True)

    latency_ms: float | None = Field(default=None, ge=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    rate_limit_rate: float | None = Field(default=None, ge=0, le=1)
    retry_after_s: int | None = Field(default=None, ge=0)
    outage: bool | None = None
    drop_after_commit_rate: float | None = Field(default=None, ge=0, le=1)
    late_commit_s: float | None = Field(default=None, ge=0)
    reject_credentials: bool | None = None


def create_sim_app(state: SimState) -> web.Application:
    app = web.Application(middlewares=[quivo_gateway])
    app[SIM_STATE] = state
    app.router.add_post("/login", login, name="login")
    app.router.add_get("/customerInquiries/{inquiry_id}", get_inquiry, name="get_inquiry")
    app.router.add_post("/customerInquiries/{inquiry_id}/ratings", post_rating, name="post_rating")
    app.router.add_get("/_sim/ratings", sim_ratings, name="sim_ratings")
    app.router.add_get("/_sim/stats", sim_stats, name="sim_stats")
    app.router.add_put("/_sim/faults", sim_faults, name="sim_faults")
    app.router.add_post("/_sim/tokens/expire", sim_expire_tokens, name="sim_expire_tokens")
    app.router.add_post("/_sim/reset", sim_reset, name="sim_reset")
    return app


@web.middleware
async def quivo_gateway(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What sits in front of every Quivo route: latency, outage, API key, session token, counters."""
    route = request.match_info.route.name
    if route not in _QUIVO_ROUTES:
        return await handler(request)
    state = request.app[SIM_STATE]
    inquiry_key = request.match_info.get("inquiry_id", "")
    posts_rating = route == "post_rating"
    if inquiry_key:
        state.inquiry_call_opened(inquiry_key)
    if posts_rating:
        state.rating_post_opened(inquiry_key)
    try:
        response = await _pass_gateway(request, handler, state, route)
    finally:
        if inquiry_key:
            state.inquiry_call_closed(inquiry_key)
        if posts_rating:
            state.rating_post_closed(inquiry_key)
    transport = request.transport
    answered = transport is not None and not transport.is_closing()
    state.count(route, response.status if answered else NO_ANSWER)
    return response


async def _pass_gateway(
    request: web.Request, handler: Handler, state: SimState, route: str
) -> web.StreamResponse:
    # The whole request arrives before Quivo takes its time: a client that leaves meanwhile is too late.
    await request.read()
    if state.latency_ms > 0:
        await asyncio.sleep(state.latency_ms / 1000)
    if state.outage:
        return _message(503, "Service Unavailable")
    if request.headers.get("X-Api-Key") != state.api_key:
        return _message(403, "Forbidden")
    if route != "login":
        token_status = state.token_status(_session_token(request))
        if token_status is TokenStatus.UNKNOWN:
            return _message(401, "Unauthorized")
        if token_status is TokenStatus.EXPIRED:
            return _message(401, "The incoming token has expired")
    return await handler(request)


def _session_token(request: web.Request) -> str:
    """The token from `Authorization`: bare as in Quivo's docs, or with a `Bearer ` prefix."""
    value = request.headers.get("Authorization", "").strip()
    scheme, _, rest = value.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else value


async def login(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    try:
        body = json.loads(await request.read())
    except ValueError:
        return _plain_text(400, "Invalid request body")
    if not isinstance(body, dict) or not state.credentials_match(body.get("username"), body.get("password")):
        return _message(401, "Incorrect username or password.")
    return web.json_response({"token": state.issue_token(), "expiresIn": state.token_ttl_s})


async def get_inquiry(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    inquiry = _find_inquiry(request, state)
    if isinstance(inquiry, web.Response):
        return inquiry
    return web.json_response(inquiry.as_json(state.username))


async def post_rating(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    if state.draw_rate_limited():
        return _message(429, "Too Many Requests", headers={"Retry-After": str(state.retry_after_s)})
    inquiry = _find_inquiry(request, state)
    if isinstance(inquiry, web.Response):
        return inquiry
    try:
        rating_request = parse_rating_request(await request.read())
    except InvalidBody as exc:
        return _plain_text(400, str(exc))
    error_status = state.draw_error_status()
    if error_status is not None:
        return _message(error_status, _ERROR_REASONS[error_status])
    if state.commit_late(inquiry, rating_request.rating, rating_request.rating_message):
        return _drop_connection(request)
    state.record_rating(inquiry, rating_request.rating, rating_request.rating_message)
    if state.draw_drop_after_commit():
        return _drop_connection(request)
    return web.json_response(inquiry.as_json(state.username))


def parse_rating_request(body: bytes) -> RatingRequest:
    """Validate `{"rating": number, "ratingMessage": string?}` the way Quivo's gateway words refusals."""
    try:
        payload = json.loads(body, parse_constant=_reject_json_constant)
    except ValueError:
        raise InvalidBody("Invalid request body") from None
    if not isinstance(payload, dict):
        raise InvalidBody("Invalid request body")
    rating = payload.get("rating")
    if rating is None:
        raise InvalidBody("rating: must not be null")
    if isinstance(rating, bool) or not isinstance(rating, int | float):
        raise InvalidBody("rating: must be a number")
    try:
        rating = float(rating)
    except OverflowError:
        rating = math.inf
    if not math.isfinite(rating):
        raise InvalidBody("rating: must be a finite number")
    rating_message = payload.get("ratingMessage")
    if rating_message is not None and not isinstance(rating_message, str):
        raise InvalidBody("ratingMessage: must be a string")
    return RatingRequest(rating, rating_message)


def _reject_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _find_inquiry(request: web.Request, state: SimState) -> Inquiry | web.Response:
    raw_id = request.match_info["inquiry_id"]
    # Length first: int() refuses very long digit strings, and over 19 digits always exceed int64.
    if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 19 or int(raw_id) > INT64_MAX:
        return _plain_text(400, "customerInquiryId: must be an int64")
    inquiry = state.inquiry(int(raw_id))
    if inquiry is None:
        return _message(404, "Customer inquiry not found")
    return inquiry


def _drop_connection(request: web.Request) -> web.Response:
    """End the exchange with no HTTP answer, as when an answer is lost after Quivo committed."""
    transport = request.transport
    if transport is not None:
        transport.close()
    # Never sent: aiohttp finds the transport closing when writing it and treats that as a quiet disconnect.
    return web.Response()


async def sim_ratings(request: web.Request) -> web.Response:
    ratings = request.app[SIM_STATE].ratings
    return web.json_response({"ratings": [record.as_json() for record in ratings], "count": len(ratings)})


async def sim_stats(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    return web.json_response(
        {
            "requests": state.requests_by_route(),
            "logins": state.logins,
            "ratings": len(state.ratings),
            "most_rating_posts_at_once_per_inquiry": state.most_rating_posts_at_once_per_inquiry,
            "most_calls_at_once_per_inquiry": state.most_calls_at_once_per_inquiry,
            "most_rating_posts_at_once": state.most_rating_posts_at_once,
            "late_commits_pending": state.late_commits_pending,
            "rating_posts_open": state.rating_posts_open,
        }
    )


async def sim_faults(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    try:
        update = FaultsUpdate.model_validate_json(await request.read())
    except ValidationError as exc:
        return web.json_response({"message": "invalid faults", "errors": _describe(exc)}, status=400)
    state.set_faults(update.model_dump(exclude_none=True))
    return web.json_response(state.fault_knobs())


def _describe(exc: ValidationError) -> list[str]:
    described = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "body"
        what = "unknown knob" if error["type"] == "extra_forbidden" else error["msg"]
        described.append(f"{where}: {what}")
    return described


async def sim_expire_tokens(request: web.Request) -> web.Response:
    return web.json_response({"expired": request.app[SIM_STATE].expire_tokens()})


async def sim_reset(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    state.reset()
    return web.json_response(state.fault_knobs())


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=headers)


def _plain_text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)
