"""The cycle collector, held off while a bulk import builds a page's objects."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic cycle-collector pass until the block ends. A bulk page allocates hundreds of
    thousands of container objects (the feeds' observations, rows, ORM instances) that all live
    until it is written, so the passes those allocations set off walk all of them again and
    again for nothing: a fifth of a large import's time (bench/README.md, W5). What the block
    leaves as cyclic garbage goes with the first pass after it.

    The switch is the process's, so blocks in several threads share it: the collector comes
    back when the last one ends, and only if it was on when the first began."""
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
