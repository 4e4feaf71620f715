"""Python's cyclic garbage collector set for serving: what start-up built is never scanned again."""

import gc

# A serving process makes and drops thousands of objects a second (each request's or delivery's coroutines,
# futures and answers). Collected every 10,000 new objects rather than Python's 700, most of them are already
# gone by reference counting when a pass comes, instead of walked while in flight: 6% fewer instructions per
# delivery in the worker's loop (callgrind), and the collector's ~4% of an intake process's CPU at
# saturation gone from its profile (perf): bench/HISTORY.md.
YOUNG_THRESHOLD = 10_000


def settle_after_start() -> None:
    """Collect once, move every object alive now out of the collector's reach, collect the young less often.

    Modules, the app, its routes and the store's connections live as long as the process; left tracked,
    every full collection walks all of them while the event loop waits (tens of ms a pause, measured:
    bench/HISTORY.md). Frozen (gc.freeze), a full collection walks only what serving made since.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
