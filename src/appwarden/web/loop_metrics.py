"""Prometheus metrics changed only on the event loop, without a lock.

prometheus_client makes every metric safe for any thread: each increment takes a lock, and a
histogram's observation walks its buckets under it. For the gate's remembered answers, which cost
a few microseconds each, that was about a fifth of the gate's own time (0.3 µs to count an answer,
0.7 µs to time it). The HTTP layer's request latency and the gate's answers are recorded only by
code that runs on the event loop (the access middleware and the gate's fast path), one request at
a time, so a plain integer slot does: an increment is an addition, an observation a bisection and
two additions. The registry reads them from another thread at scrape time; a scrape may see an
answer counted a moment before it is timed, never a count that goes back.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["LoopCounter", "LoopHistogram"]

Child = TypeVar("Child")


class _Timings:
    """One label set's buckets (the last is +Inf) and sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: its `le`
        self.total += value


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class _Labelled(Collector, Generic[Child]):
    """A metric's name, help and label names, and its children by label values."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], child: Callable[[], Child]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._child = child
        self._children: dict[tuple[str, ...], Child] = {}

    def labels(self, *values: str) -> Child:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, not {values}")
            child = self._children[values] = self._child()
        return child


class LoopHistogram(_Labelled[_Timings]):
    """A labelled histogram, `labels(*values).observe(seconds)` as prometheus_client's."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        super().__init__(name, documentation, labelnames, lambda: _Timings(bounds))
        self._bounds = bounds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        uppers = [*map(floatToGoString, self._bounds), "+Inf"]
        for values, child in list(self._children.items()):
            counts, total = list(child.counts), child.total
            cumulative, buckets = 0, []
            for upper, count in zip(uppers, counts, strict=True):
                cumulative += count
                buckets.append((upper, float(cumulative)))
            family.add_metric(list(values), buckets, total)
        yield family


class LoopCounter(_Labelled[_Count]):
    """A labelled counter, `labels(*values).inc()`, with a prometheus_client `Counter` of the
    same name (`threads`, registered nowhere) for the code that counts on other threads (a
    synchronous route): the two are exported as one."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, documentation, labelnames, _Count)
        self.threads = Counter(name, documentation, labelnames, registry=None)

    def collect(self) -> Iterator[Metric]:
        totals = {values: float(child.value) for values, child in list(self._children.items())}
        for described in self.threads.collect():
            for sample in described.samples:
                if sample.name == f"{self.name}_total":
                    values = tuple(sample.labels[name] for name in self.labelnames)
                    totals[values] = totals.get(values, 0.0) + sample.value
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, total in totals.items():
            family.add_metric(list(values), total)
        yield family
