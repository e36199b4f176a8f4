"""Timing: warm-up, then the median of repeated samples (timeit-style).

Calls shorter than ``sample_time`` are looped ``number`` times per sample so
the clock resolution and the loop overhead do not dominate; the reported
time is per call. The garbage collector is off while sampling.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import time


@dataclasses.dataclass
class Timing:
    median: float  # seconds per call
    samples: list  # seconds per call, one per repeat
    number: int  # calls per sample
    first_result: object = dataclasses.field(default=None, repr=False)

    @property
    def repeats(self):
        return len(self.samples)

    def as_dict(self):
        return {"median_s": self.median, "samples_s": self.samples, "number": self.number,
                "min_s": min(self.samples), "max_s": max(self.samples)}


def measure(fn, *, warmup=1, min_time=0.2, min_repeats=3, max_repeats=100, sample_time=2e-3,
            max_time=None, keep_first=True):
    """Times ``fn()``: ``warmup`` untimed calls (the first one's result is kept
    in ``first_result`` if ``keep_first``; else it is dropped before timing,
    so that no sample runs beside a large live result), then at least ``min_repeats`` samples and enough to
    spend about ``min_time`` seconds (at most ``max_repeats`` samples, and
    no more than ``max_time`` seconds if given, but never fewer than
    ``min_repeats``). Returns a :class:`Timing` with the median per call."""
    first = None
    est = 0.0
    for i in range(max(1, warmup)):
        t0 = time.perf_counter()
        r = fn()
        est = time.perf_counter() - t0
        if i == 0 and keep_first:
            first = r
        del r
    est = max(est, 1e-9)
    number = 1 if est >= sample_time else min(100_000, math.ceil(sample_time / est))
    per_sample = est * number
    repeats = max(min_repeats, min(max_repeats, math.ceil(min_time / per_sample)))
    if max_time is not None:
        repeats = max(min_repeats, min(repeats, int(max_time / per_sample)))
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - t0) / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(statistics.median(samples), samples, number, first)


def merge_timings(parts):
    """One :class:`Timing` from several measured blocks of the same call (all
    their samples, the median over them; the first block's first result)."""
    samples = [x for tm in parts for x in tm.samples]
    return Timing(statistics.median(samples), samples, parts[0].number, parts[0].first_result)


def format_time(seconds):
    """``12.3 ms``, ``4.56 µs``, ``1.23 s``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            v = seconds / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{seconds / 1e-9:.0f} ns"
