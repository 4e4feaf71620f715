"""Python's cyclic garbage collector set for serving: what start-up built is never scanned again."""

import gc


def settle_after_start() -> None:
    """Collect once, then move every object alive now out of the collector's reach (gc.freeze).

    Modules, the app, its routes and the store's connections live as long as the process; left tracked,
    every full collection walks all of them while the event loop waits (tens of ms a pause, measured:
    bench/HISTORY.md). Frozen, a full collection walks only what serving made since.
    """
    gc.collect()
    gc.freeze()
