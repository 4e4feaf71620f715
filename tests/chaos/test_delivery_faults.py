"""Delivery under fire: kills, SIGTERMs, Quivo outages and flaky answers, revoked credentials, split roles."""

import math
import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import (
    PROFILE,
    RelayProcess,
    Sender,
    Stage,
    delivered_tags,
    drain,
    http_call,
    read_db,
    seeded_rng,
    stage,
    verify,
    wait_for,
)

# Real processes and seconds of wall time each: `pytest -m "not chaos"` leaves them out.
pytestmark = pytest.mark.chaos


def kill_moments(rng: random.Random, count: int, window_s: float) -> list[float]:
    """`count` seconds from now, spread over the window, at random moments inside each share of it."""
    share = window_s / count
    return [share * (n + rng.uniform(0.15, 0.85)) for n in range(count)]


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def states(db: Path) -> dict[str, int]:
    return {
        row["state"]: row["n"]
        for row in read_db(db, "SELECT state, count(*) AS n FROM deliveries GROUP BY 1")
    }


def sim_statuses(stats: dict[str, Any], route: str = "post_rating") -> dict[str, int]:
    return stats["requests"].get(route, {})


def test_kill_storm_loses_nothing_and_sends_nothing_twice(tmp_path: Path):
    started = time.monotonic()
    seed, rng = seeded_rng("kill_storm")
    count, rate = PROFILE.pick(60, 2500), PROFILE.pick(20.0, 25.0)
    kills = PROFILE.kill_cycles
    # Quivo takes a little time per call, so a kill often lands while sends are out.
    with stage(tmp_path, "--latency-ms", "40") as s:
        s.sim.faults(drop_after_commit_rate=0.1)
        with Sender(s.relay.url, count, merchant_id=101, rate_per_s=rate) as sender:
            window = count / rate
            for offset in kill_moments(rng, kills, window):
                sleep_until(sender.started_at + offset)
                s.relay.kill()
                time.sleep(rng.uniform(0.0, 1.0))  # down for a while: Bringg's webhooks are refused
                s.relay.start()
            assert sender.wait(timeout=PROFILE.drain_s), "the restarted relay acknowledged every rating"
        figures = verify(
            "1. kill storm (SIGKILL + restart, dropped answers)",
            sender,
            s.sim,
            s.db_path,
            started_at=started,
            seed=seed,
            extra={"kills": kills, "drop_after_commit_rate": 0.1},
        )
        stats = s.sim.stats()
    assert s.relay.starts == kills + 1
    # The faults really happened: resends after refused connections, and answers Quivo dropped.
    assert figures.posts > figures.sent
    assert sim_statuses(stats).get("dropped", 0) > 0
    assert figures.dead == 0


def test_graceful_stops_under_load_exit_0_within_the_grace_time(tmp_path: Path):
    started = time.monotonic()
    seed, rng = seeded_rng("graceful_stops")
    count, rate, stops = PROFILE.pick(45, 1000), 15.0, PROFILE.pick(2, 8)
    grace, latency_ms = 1.0, 1200
    # Every send takes longer than the grace (but less than the timeout): at each SIGTERM the sends that
    # started in its last 0.2 s cannot finish in time and are released, though Quivo commits them later.
    with stage(
        tmp_path,
        "--latency-ms",
        str(latency_ms),
        RELAY_SHUTDOWN_GRACE_S=str(grace),
        QUIVO_TIMEOUT_S="3",
        RELAY_UNSURE_SETTLE_S="3",
        QUIVO_MAX_CONCURRENCY="16",
    ) as s:
        took: list[float] = []
        with Sender(s.relay.url, count, merchant_id=102, rate_per_s=rate) as sender:
            for offset in kill_moments(rng, stops, count / rate):
                sleep_until(sender.started_at + offset)
                code, seconds = s.relay.stop()
                took.append(round(seconds, 2))
                assert code == 0
                # A graceful stop finishes or releases every send it held: no lease is left to expire.
                assert states(s.db_path).get("sending", 0) == 0
                s.relay.start()
            assert sender.wait(timeout=PROFILE.drain_s)
        # Counted once drained: the released sends Quivo committed anyway are reconciled after the restart.
        drain(sender.ratings, s.sim, s.db_path, PROFILE.drain_s)
        events = [event["event"] for event in s.relay.log_events()]
        figures = verify(
            "2. graceful stops (SIGTERM under load)",
            sender,
            s.sim,
            s.db_path,
            started_at=started,
            seed=seed,
            extra={
                "stops": stops,
                "stop_seconds": took,
                "grace_s": grace,
                "latency_ms": latency_ms,
                "released": events.count("delivery.released"),
                "reconciled": events.count("delivery.reconciled"),
            },
        )
    # Stopping: web requests in flight, then the worker's grace, then closing the store; 2 s of margin.
    assert max(took) <= grace + 2, took
    assert events.count("worker.stopped") == stops
    assert events.count("delivery.released") > 0, "some sends outlasted the grace"
    assert figures.dead == 0


def test_quivo_outage_backs_off_and_everything_is_delivered_after(tmp_path: Path):
    started = time.monotonic()
    seed, _ = seeded_rng("quivo_outage")
    count, outage_s, concurrency = PROFILE.pick(40, 400), PROFILE.outage_s, 4
    # A cap above the outage, so the backoff can keep doubling through it (the runbook's production case).
    retry_max = 2 * outage_s
    with stage(
        tmp_path,
        QUIVO_MAX_CONCURRENCY=str(concurrency),
        RELAY_RETRY_BASE_S="0.2",
        RELAY_RETRY_MAX_S=str(retry_max),
    ) as s:
        with Sender(s.relay.url, count, merchant_id=103, rate_per_s=count / (outage_s + 2)) as sender:
            # Some delivered before the outage, the rest arrive during it.
            wait_for(lambda: s.sim.rating_posts() >= 3, 30, "deliveries before the outage")
            before = s.sim.rating_posts()
            s.sim.faults(outage=True)
            outage_began = time.monotonic()
            time.sleep(outage_s)
            during = s.sim.rating_posts() - before
            s.sim.faults(outage=False)
            actual_outage = time.monotonic() - outage_began
            assert sender.wait(timeout=PROFILE.drain_s)
        # Each failure (while no pause runs) pauses every Quivo call for 0.5 s, doubling per failure in a row:
        # pauses 0.5, 1, 2, ... cover the outage after k = ceil(log2(outage / 0.5 + 1)) failures. Between two
        # pauses at most QUIVO_MAX_CONCURRENCY calls are out, so the outage sees at most concurrency x (k + 1)
        # rating POSTs (one more round for the calls already out when it began). Per-delivery backoff only
        # lowers this. Without backoff, 4 connections answered 503 at once would make thousands.
        rounds = math.ceil(math.log2(actual_outage / 0.5 + 1)) + 1
        bound = concurrency * rounds
        figures = verify(
            "3. Quivo outage and recovery",
            sender,
            s.sim,
            s.db_path,
            started_at=started,
            seed=seed,
            extra={"outage_s": round(actual_outage, 1), "posts_during_outage": during, "bound": bound},
        )
        outage_answers = sim_statuses(s.sim.stats()).get("503", 0)
    assert outage_answers > 0, "the relay tried Quivo during the outage"
    assert during <= bound, f"{during} rating POSTs during a {actual_outage:.1f} s outage (bound {bound})"
    assert figures.dead == 0, "an outage shorter than the attempts allow killed a delivery"


def test_flaky_quivo_delivers_exactly_once(tmp_path: Path):
    started = time.monotonic()
    seed, rng = seeded_rng("flaky_quivo")
    # The stand-in draws its faults at random: 110 ratings make a run without a 429 or a drop (each
    # drawn for a tenth of the posts) about a one-in-a-million event, where 45 made it one in 500.
    count, rate = PROFILE.pick(110, 1200), PROFILE.pick(30.0, 25.0)
    slow_s = PROFILE.pick(1.5, 10.0)
    knobs = {"error_rate": 0.2, "rate_limit_rate": 0.1, "retry_after_s": 1, "drop_after_commit_rate": 0.1}
    with stage(tmp_path, QUIVO_TIMEOUT_S="1") as s:
        s.sim.faults(**knobs)
        with Sender(s.relay.url, count, merchant_id=104, rate_per_s=rate) as sender:
            window = count / rate
            # Session tokens expire early now and then: a 401, a new login, and the call once more.
            sleep_until(sender.started_at + rng.uniform(0.05, 0.2) * window)
            s.sim.expire_tokens()
            # Some time in the middle, Quivo answers (and commits) only after the relay gave up waiting.
            sleep_until(sender.started_at + rng.uniform(0.2, 0.5) * window)
            s.sim.faults(latency_ms=1500)
            time.sleep(slow_s)
            s.sim.faults(latency_ms=0)
            s.sim.expire_tokens()
            assert sender.wait(timeout=PROFILE.drain_s)
        figures = verify(
            "4. flaky Quivo (5xx, 429 + Retry-After, timeouts, dropped answers, expired tokens)",
            sender,
            s.sim,
            s.db_path,
            started_at=started,
            seed=seed,
            extra={**knobs, "slow_s": slow_s, "latency_ms": 1500},
        )
        stats = s.sim.stats()
    posts = sim_statuses(stats)
    assert posts.get("429", 0) > 0 and posts.get("dropped", 0) > 0
    assert stats["logins"] >= 2, "expired tokens were renewed"
    assert sum(posts.get(code, 0) for code in ("500", "502", "503")) > 0
    # Calls with no answer that lasted the whole QUIVO_TIMEOUT_S: the relay gave up waiting on them.
    timed_out = read_db(
        s.db_path, "SELECT count(*) FROM attempts WHERE outcome = 'QuivoNoAnswer' AND duration_ms >= 950"
    )[0][0]
    assert timed_out > 0, "some calls outlasted QUIVO_TIMEOUT_S"
    assert stats["most_rating_posts_at_once_per_inquiry"] <= 1
    assert figures.dead == 0


def test_quivo_committing_late_still_means_exactly_once(tmp_path: Path):
    started = time.monotonic()
    seed, _ = seeded_rng("late_commit")
    # The first send to each inquiry loses its answer at once and Quivo commits it 3 s later (as behind a
    # gateway that gave up): 9 of 20 arrived twice when the relay read the inquiry back at once.
    count, late_s, settle_s = 20, 3.0, 4.0
    with stage(tmp_path, RELAY_UNSURE_SETTLE_S=str(settle_s)) as s:
        s.sim.faults(late_commit_s=late_s)
        with Sender(s.relay.url, count, merchant_id=109, rate_per_s=20) as sender:
            assert sender.wait(timeout=PROFILE.drain_s)
        # Every late commit made, so a second copy sent before one of them would be counted.
        wait_for(lambda: s.sim.stats()["late_commits_pending"] == 0, PROFILE.drain_s, "the late commits")
        figures = verify(
            "9. Quivo commits late (answer dropped at once, rating committed 3 s later)",
            sender,
            s.sim,
            s.db_path,
            started_at=started,
            seed=seed,
            extra={"late_commit_s": late_s, "settle_s": settle_s},
        )
        posts = sim_statuses(s.sim.stats())
        reconciled = read_db(s.db_path, "SELECT count(*) FROM attempts WHERE action = 'reconcile'")[0][0]
    assert posts.get("dropped", 0) == count, "every first send lost its answer"
    assert reconciled >= count, "each was read back before anything else"
    assert figures.delivered == count and figures.dead == 0


def test_revoked_credentials_pause_deliveries_without_spending_attempts(tmp_path: Path):
    started = time.monotonic()
    seed, _ = seeded_rng("credentials")
    before, during = PROFILE.pick(10, 100), PROFILE.pick(40, 300)
    merchant, concurrency = 105, 8
    with stage(tmp_path, QUIVO_MAX_CONCURRENCY=str(concurrency)) as s:
        readyz = f"{s.relay.url}/readyz"
        with Sender(s.relay.url, before, merchant_id=merchant, rate_per_s=20) as early:
            assert early.wait(timeout=PROFILE.drain_s)
        wait_for(lambda: len(s.sim.ratings()) == before, PROFILE.drain_s, "delivery before the revocation")

        s.sim.faults(reject_credentials=True)
        s.sim.expire_tokens()
        revoked_at, posts_at_revocation, logins_at_revocation = (
            time.monotonic(),
            s.sim.rating_posts(),
            _logins(s),
        )
        with Sender(
            s.relay.url, during, merchant_id=merchant, first_rating_id=before + 1, rate_per_s=40
        ) as sender:
            assert sender.wait(timeout=PROFILE.drain_s), "webhooks are taken while deliveries pause"
            wait_for(lambda: bool(_problems(readyz)), 15, "/readyz naming the refused credentials")
            problems = _problems(readyz)
            time.sleep(PROFILE.pick(1.0, 15.0))  # paused for a while: no attempt may be spent on it
            waiting = read_db(s.db_path, "SELECT state, attempts FROM deliveries WHERE rating_id > ?", before)
            posts_while_paused = s.sim.rating_posts() - posts_at_revocation
            logins_while_paused = _logins(s) - logins_at_revocation
            paused_s = time.monotonic() - revoked_at
            # Logins: one per delivery claimed before the pause (2 per call slot), then probes backing off
            # from 1 s (doubling), which fit ceil(log2(paused_s + 1)) + 1 times into the pause, whatever else
            # happens (webhooks arriving included).
            login_bound = 2 * concurrency + math.ceil(math.log2(paused_s + 1)) + 1
            assert logins_while_paused <= login_bound, f"{logins_while_paused} logins in {paused_s:.1f} s"
            s.sim.faults(reject_credentials=False)
            restored_at = time.monotonic()
        wanted = {rating.key for rating in early.ratings + sender.ratings}
        wait_for(lambda: set(delivered_tags(s.sim)) >= wanted, PROFILE.drain_s, "deliveries resumed")
        resumed_s = time.monotonic() - restored_at
        figures = verify(
            "5. credentials revoked, then restored",
            [early, sender],
            s.sim,
            s.db_path,
            started_at=started,
            seed=seed,
            extra={
                "paused_s": round(paused_s, 1),
                "rating_posts_while_paused": posts_while_paused,
                "logins_while_paused": logins_while_paused,
                "resumed_within_s": round(resumed_s, 1),
            },
        )
        ready_status, _, ready_after = http_call("GET", readyz)
    assert "deliveries paused: Quivo refused the credentials, 401" in problems, problems
    assert {row["state"] for row in waiting} <= {"pending", "retrying"}
    assert [row["attempts"] for row in waiting] == [0] * during
    # Only sends already claimed when the tokens expired reach Quivo (refused: 401), one per call slot.
    assert posts_while_paused <= concurrency
    # The next probe comes at most one (doubled) probe delay after the restore: about the pause so far.
    assert resumed_s <= paused_s + 5
    assert (ready_status, ready_after["status"]) == (200, "ready")
    assert figures.delivered == before + during and figures.dead == 0


def _logins(s: Stage) -> int:
    """Login requests Quivo has seen, whatever their answer."""
    return sum(s.sim.stats()["requests"].get("login", {}).values())


def _problems(readyz: str) -> list[str]:
    """What /readyz says about Quivo credentials; empty while it says nothing of them."""
    _, _, answer = http_call("GET", readyz)
    return [problem for problem in answer.get("problems", []) if "credentials" in problem]


def test_split_web_and_worker_killed_at_random_still_deliver_exactly_once(tmp_path: Path):
    started = time.monotonic()
    seed, rng = seeded_rng("split_deployment")
    count, rate = PROFILE.pick(60, 2000), PROFILE.pick(20.0, 25.0)
    kills = PROFILE.kill_cycles + 1
    with stage(tmp_path, "--latency-ms", "40", split=True) as s:
        assert s.worker is not None
        s.sim.faults(drop_after_commit_rate=0.05)
        victims: list[str] = []
        with Sender(s.relay.url, count, merchant_id=108, rate_per_s=rate) as sender:
            for offset in kill_moments(rng, kills, count / rate):
                sleep_until(sender.started_at + offset)
                chosen: list[RelayProcess] = rng.choice([[s.relay], [s.worker], [s.relay, s.worker]])
                victims.append("+".join(" ".join(p.args) for p in chosen))
                for process in chosen:
                    process.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                for process in chosen:
                    process.start(wait=False)
                for process in chosen:
                    process.wait_ready()
            assert sender.wait(timeout=PROFILE.drain_s)
        figures = verify(
            "8. split deployment (web and worker killed at random)",
            sender,
            s.sim,
            s.db_path,
            started_at=started,
            seed=seed,
            extra={"kills": victims},
        )
    assert s.relay.starts + s.worker.starts == 2 + sum(len(v.split("+")) for v in victims)
    assert '"event": "delivery.delivered"' not in s.relay.log_path.read_text()
    assert figures.dead == 0
