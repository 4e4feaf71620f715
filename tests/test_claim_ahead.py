"""The claim cap: three slots' worth at rest, what a tenth of a second finishes under load, eight at most."""

from relay.claim_ahead import HORIZON_S, LEAST_PER_SLOT, MOST_PER_SLOT, WINDOW_S, ClaimAhead


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def finishing(ahead: ClaimAhead, clock: Clock, per_second: float, seconds: float) -> int:
    """Claims every 10 ms while `per_second` deliveries finish; the last claim's cap."""
    owed = 0.0
    for _ in range(round(seconds / 0.01)):
        clock.now += 0.01
        owed += per_second * 0.01
        while owed >= 1:
            ahead.finished()
            owed -= 1
        cap = ahead.update()
    return cap


def test_a_worker_at_rest_claims_three_slots_worth():
    clock = Clock()
    ahead = ClaimAhead(64, clock)

    assert ahead.cap == ahead.update() == LEAST_PER_SLOT * 64
    assert finishing(ahead, clock, 0, 5) == LEAST_PER_SLOT * 64
    assert finishing(ahead, clock, 100, 5) == LEAST_PER_SLOT * 64  # 10 in a tenth of a second


def test_the_cap_follows_what_a_tenth_of_a_second_finishes_between_the_bounds():
    clock = Clock()
    ahead = ClaimAhead(64, clock)

    assert finishing(ahead, clock, 3000, 2) == round(3000 * HORIZON_S)
    assert finishing(ahead, clock, 20_000, 2) == MOST_PER_SLOT * 64
    # Quivo slows down: the cap comes back within a few windows, not kept at the busiest rate seen.
    assert finishing(ahead, clock, 500, 1) == LEAST_PER_SLOT * 64


def test_claims_closer_together_than_a_window_keep_the_cap_they_found():
    clock = Clock()
    ahead = ClaimAhead(64, clock)
    clock.now += 2 * WINDOW_S
    for _ in range(700):
        ahead.finished()
    grown = ahead.update()
    # Moments later, nothing finished yet: no rate is measured over so short a time.
    clock.now += WINDOW_S / 10

    assert grown == round(700 / (2 * WINDOW_S) / 2 * HORIZON_S)
    assert ahead.update() == grown
