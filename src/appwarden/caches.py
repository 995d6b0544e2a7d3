"""Small bounded caches for what a long-running process is asked again and again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remembered(cache: dict[K, V], limit: int, key: K, compute: Callable[..., V], *args: Any) -> V:
    """`cache[key]`, computed by `compute(*args)` the first time (an exception is not
    remembered). The cache is emptied when it holds `limit` entries: whatever callers send, it
    stays that small. A dictionary rather than `functools.lru_cache`, whose entries are objects
    the cycle collector tracks. Keep keys and values that are exact tuples (not named tuples or
    dataclasses) of plain values, or plain values: the collector stops tracking those, and a
    full pass holds a server's event loop for as long as it walks what is tracked."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= limit:
            cache.clear()
        value = cache[key] = compute(*args)
    return value
