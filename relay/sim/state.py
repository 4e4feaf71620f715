"""The simulated Quivo's state: credentials, tokens, inquiries, recorded ratings and fault knobs."""

import asyncio
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final

INT64_MAX: Final = 2**63 - 1
# Pseudo-status counted for a request whose connection was closed without an HTTP answer.
NO_ANSWER: Final = 0
# Names of the SimState fields that inject faults; their dataclass defaults are the healthy values.
FAULT_KNOBS: Final = (
    "latency_ms",
    "error_rate",
    "rate_limit_rate",
    "retry_after_s",
    "outage",
    "drop_after_commit_rate",
    "late_commit_s",
    "reject_credentials",
)
_ERROR_STATUSES: Final = (500, 502, 503)


def utc_now_text() -> str:
    """Now as Quivo writes instants (the docs' example: `2023-11-07T05:31:56Z`)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenStatus(Enum):
    """What the sim knows of a session token presented in `Authorization`."""

    VALID = "valid"
    UNKNOWN = "unknown"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class RatingRecord:
    """One rating Quivo accepted (committed), whether or not the client saw the answer."""

    inquiry_id: int
    rating: float
    message: str | None
    at: str

    def as_json(self) -> dict[str, Any]:
        return {"inquiry_id": self.inquiry_id, "rating": self.rating, "message": self.message, "at": self.at}


@dataclass(slots=True)
class Inquiry:
    """A customer inquiry; its rating messages are the shared `RatingRecord`s, to keep memory flat."""

    id: int
    created: str
    ratings: list[RatingRecord] = field(default_factory=list)

    @property
    def current_rating(self) -> float | None:
        return self.ratings[-1].rating if self.ratings else None

    def as_json(self, poster: str) -> dict[str, Any]:
        """The inquiry in the shape of `customer_inquiry.doc-example.json`; `poster` is the API user."""
        return {
            "subject": f"Delivery feedback #{self.id}",
            "sellerId": 1000 + self.id % 97,
            "warehouseId": 10 + self.id % 7,
            "topic": "ONBOARDING",
            "category": "INBOUND",
            "subCategory": "FULFILMENT_WAREHOUSE",
            "parentInquiryId": None,
            "metaInfo": {},
            "messages": [_rating_message(record, poster) for record in self.ratings],
            "id": self.id,
            "created": self.created,
            "status": "WITH_YOU",
            "caseNumber": f"CI-{self.id:010d}",
            "resolvedAt": None,
            "currentRating": self.current_rating,
            "resolvedBy": None,
        }


def _rating_message(record: RatingRecord, poster: str) -> dict[str, Any]:
    return {
        "category": "RATING_MESSAGE",
        "created": record.at,
        "postedAt": record.at,
        "userEmail": f"{poster}@sim.quivo.invalid",
        "username": poster,
        "fullName": "Sim API User",
        "metaInfo": {},
        "attachments": [],
        "message": record.message,
    }


@dataclass(eq=False)
class SimState:
    """Everything the simulated Quivo knows; fault knobs are plain fields, changeable at runtime."""

    api_key: str = "sim-key"
    username: str = "sim-user"
    password: str = "sim-pass"
    token_ttl_s: int = 3600
    missing: set[int] = field(default_factory=set)
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    latency_ms: float = 0.0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_s: int = 1
    outage: bool = False
    drop_after_commit_rate: float = 0.0
    # Above 0: the first rating POST to each inquiry gets no answer at once and is committed this much later,
    # as behind an API gateway that gives up on a request while the backend goes on with it.
    late_commit_s: float = 0.0
    reject_credentials: bool = False

    ratings: list[RatingRecord] = field(default_factory=list, init=False)
    requests: Counter[tuple[str, int]] = field(default_factory=Counter, init=False)
    logins: int = field(default=0, init=False)
    # How many rating POSTs for one inquiry were ever open at once: a relay must keep this at 1.
    most_rating_posts_at_once_per_inquiry: int = field(default=0, init=False)
    # How many calls (inquiry reads and rating POSTs) for one inquiry were ever open at once: a relay that
    # reads an inquiry back before it sends must keep this at 1 too, or a read can miss a send in flight.
    most_calls_at_once_per_inquiry: int = field(default=0, init=False)
    # How many rating POSTs were ever open at once in all: a relay keeps this within its concurrency.
    most_rating_posts_at_once: int = field(default=0, init=False)
    # Rating POSTs taken to commit late whose commit has not happened yet.
    late_commits_pending: int = field(default=0, init=False)
    _rating_posts_open: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _calls_open: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _inquiries: dict[int, Inquiry] = field(default_factory=dict, init=False, repr=False)
    _token_expiry: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _late_inquiries: set[int] = field(default_factory=set, init=False, repr=False)
    _late_commits: list[asyncio.TimerHandle] = field(default_factory=list, init=False, repr=False)

    def fault_knobs(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FAULT_KNOBS}

    def set_faults(self, knobs: dict[str, Any]) -> None:
        unknown = knobs.keys() - set(FAULT_KNOBS)
        if unknown:
            raise ValueError(f"unknown fault knob(s): {', '.join(sorted(unknown))}")
        for name, value in knobs.items():
            setattr(self, name, value)

    def reset(self) -> None:
        """Forget ratings, counters, inquiries and faults; tokens stay valid so clients keep working."""
        self.ratings.clear()
        self.requests.clear()
        self.logins = 0
        self.most_rating_posts_at_once_per_inquiry = 0
        self.most_calls_at_once_per_inquiry = 0
        self.most_rating_posts_at_once = 0
        self._inquiries.clear()
        self._late_inquiries.clear()
        for pending in self._late_commits:
            pending.cancel()
        self._late_commits.clear()
        self.late_commits_pending = 0
        self.set_faults({f.name: f.default for f in fields(self) if f.name in FAULT_KNOBS})

    def credentials_match(self, username: object, password: object) -> bool:
        return not self.reject_credentials and username == self.username and password == self.password

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        self._token_expiry[token] = self.clock() + self.token_ttl_s
        self.logins += 1
        return token

    def token_status(self, token: str) -> TokenStatus:
        expires_at = self._token_expiry.get(token)
        if expires_at is None:
            return TokenStatus.UNKNOWN
        return TokenStatus.VALID if self.clock() < expires_at else TokenStatus.EXPIRED

    def expire_tokens(self) -> int:
        """Expire every issued token now (they stay known, so clients get the "expired" answer)."""
        self._token_expiry = dict.fromkeys(self._token_expiry, float("-inf"))
        return len(self._token_expiry)

    def inquiry(self, inquiry_id: int) -> Inquiry | None:
        """The inquiry, created on first touch: every positive int64 id exists unless marked missing."""
        if inquiry_id in self.missing or not 0 < inquiry_id <= INT64_MAX:
            return None
        inquiry = self._inquiries.get(inquiry_id)
        if inquiry is None:
            inquiry = self._inquiries[inquiry_id] = Inquiry(id=inquiry_id, created=utc_now_text())
        return inquiry

    def record_rating(self, inquiry: Inquiry, rating: float, message: str | None) -> RatingRecord:
        record = RatingRecord(inquiry_id=inquiry.id, rating=rating, message=message, at=utc_now_text())
        inquiry.ratings.append(record)
        self.ratings.append(record)
        return record

    def commit_late(self, inquiry: Inquiry, rating: float, message: str | None) -> bool:
        """With `late_commit_s` set, take the inquiry's first rating POST to commit later; False otherwise."""
        if self.late_commit_s <= 0 or inquiry.id in self._late_inquiries:
            return False
        self._late_inquiries.add(inquiry.id)
        pending = asyncio.get_running_loop().call_later(
            self.late_commit_s, self._commit_now, inquiry, rating, message
        )
        self._late_commits.append(pending)
        self.late_commits_pending += 1
        return True

    def _commit_now(self, inquiry: Inquiry, rating: float, message: str | None) -> None:
        self.late_commits_pending -= 1
        self.record_rating(inquiry, rating, message)

    def rating_post_opened(self, inquiry_key: str) -> None:
        self._rating_posts_open[inquiry_key] += 1
        self.most_rating_posts_at_once = max(self.most_rating_posts_at_once, self._rating_posts_open.total())
        self.most_rating_posts_at_once_per_inquiry = max(
            self.most_rating_posts_at_once_per_inquiry, self._rating_posts_open[inquiry_key]
        )

    def inquiry_call_opened(self, inquiry_key: str) -> None:
        self._calls_open[inquiry_key] += 1
        self.most_calls_at_once_per_inquiry = max(
            self.most_calls_at_once_per_inquiry, self._calls_open[inquiry_key]
        )

    def inquiry_call_closed(self, inquiry_key: str) -> None:
        self._calls_open[inquiry_key] -= 1
        if not self._calls_open[inquiry_key]:
            del self._calls_open[inquiry_key]

    @property
    def rating_posts_open(self) -> int:
        """Rating POSTs here now: arrived, not yet answered."""
        return self._rating_posts_open.total()

    def rating_post_closed(self, inquiry_key: str) -> None:
        self._rating_posts_open[inquiry_key] -= 1
        if not self._rating_posts_open[inquiry_key]:
            del self._rating_posts_open[inquiry_key]

    def count(self, route: str, status: int) -> None:
        self.requests[route, status] += 1

    def requests_by_route(self) -> dict[str, dict[str, int]]:
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), n in self.requests.items():
            by_route.setdefault(route, {})["dropped" if status == NO_ANSWER else str(status)] = n
        return by_route

    def draw_rate_limited(self) -> bool:
        return self.rate_limit_rate > 0 and self.rng.random() < self.rate_limit_rate

    def draw_error_status(self) -> int | None:
        if self.error_rate > 0 and self.rng.random() < self.error_rate:
            return self.rng.choice(_ERROR_STATUSES)
        return None

    def draw_drop_after_commit(self) -> bool:
        return self.drop_after_commit_rate > 0 and self.rng.random() < self.drop_after_commit_rate
