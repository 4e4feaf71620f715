"""Failed credential checks counted per client address: past a limit, the caller is told to wait (429)."""

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from relay.http import problem

# Why the credential is always checked first, and a valid one always passes, whatever its address did:
# Bringg sends from addresses that can change and serve all its customers, and behind a proxy every
# caller has the proxy's address. Refusing an address unchecked would let any stranger lock Bringg or the
# operators out. Guessing stays as fast as the relay answers, so what makes it hopeless is the secrets'
# length (16 characters at least, refused at start otherwise). This tells a client that keeps failing to
# stop, and keeps a burst of failures to one log line instead of one per request.

# More wrong credentials in a minute than a person mistyping or a misconfigured client makes.
FAILURES_ALLOWED = 10
WINDOW_S = 60.0
# A bound on memory however many addresses fail; past it the address that failed longest ago is forgotten.
MAX_ADDRESSES = 10_000


@dataclass(frozen=True)
class Throttled:
    """A failure past the limit: answer 429, and log it when it starts a burst."""

    client: str
    retry_after_s: int
    first_of_burst: bool

    def answer(self) -> web.Response:
        """The 429 for it."""
        response = problem(
            429, "Too Many Requests", "too many failed attempts from this address; wait for Retry-After"
        )
        response.headers["Retry-After"] = str(self.retry_after_s)
        return response


@dataclass(slots=True)
class _Failures:
    # The latest FAILURES_ALLOWED at most, oldest first: all the limit needs (a deque takes 3x the memory).
    times: list[float] = field(default_factory=list)
    in_burst: bool = False


class FailureThrottle:
    """Each address may fail FAILURES_ALLOWED times in any WINDOW_S; a burst ends after a quiet WINDOW_S."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Ordered by latest failure, oldest first: stale and evicted entries are taken from the front.
        self._by_client: dict[str, _Failures] = {}

    def __len__(self) -> int:
        return len(self._by_client)

    def record_failure(self, remote: str | None) -> Throttled | None:
        """Count one failed check from `remote`; a Throttled when the address was already at the limit."""
        now = self._clock()
        client = client_key(remote)
        self._forget_quiet(now)
        failures = self._by_client.pop(client, None) or _Failures()
        failures.times = [at for at in failures.times if at > now - WINDOW_S]
        if not failures.times:
            failures.in_burst = False
        over_limit = len(failures.times) >= FAILURES_ALLOWED
        failures.times = [*failures.times[1 - FAILURES_ALLOWED :], now]
        if len(self._by_client) >= MAX_ADDRESSES:
            del self._by_client[next(iter(self._by_client))]
        self._by_client[client] = failures
        if not over_limit:
            return None
        first_of_burst = not failures.in_burst
        failures.in_burst = True
        # Allowed again once the oldest of its last FAILURES_ALLOWED failures leaves the window.
        retry_after = max(1, math.ceil(failures.times[0] + WINDOW_S - now))
        return Throttled(client, retry_after, first_of_burst)

    def _forget_quiet(self, now: float) -> None:
        while self._by_client:
            oldest = next(iter(self._by_client))
            if self._by_client[oldest].times[-1] > now - WINDOW_S:
                return
            del self._by_client[oldest]


def client_key(remote: str | None) -> str:
    """Whose budget a failure spends: the IPv4 address, or the /64 an IPv6 host can pick addresses from."""
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
