"""A short differential fuzzing run of the whole public API (about a minute).

The cases and the oracle are in fuzz_harness.py: every call's outcome must be
the reference's (the same exception class naming an argument, or results
equal within the accuracy contract), inputs must stay unchanged and huge
results must fail with MemoryError/ValueError. tools/fuzz_long.py runs the
same cases by the hundred thousand.
"""

import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fuzz_harness as fh
import pyattn

pytestmark = pytest.mark.integration


@settings(max_examples=1500)
@given(st.data())
def test_fuzz_hypothesis(data):
    fh.run_one(fh.HypothesisChooser(data), with_layers=True)


def test_fuzz_seeded_cases():
    """The long campaign's first seeds (the same cases tools/fuzz_long.py
    starts with), each outcome class seen."""
    seen = collections.Counter()
    for seed in range(2500):
        for outcome in fh.run_one(fh.RngChooser(seed), with_layers=True):
            seen[outcome] += 1
    # The draw covers every outcome the oracle knows.
    assert {"ok", "TypeError", "ValueError", "MemoryError"} <= set(seen), seen


# The oracle itself must catch what it is there to catch: a harness that
# passes a broken pyattn proves nothing.

def _findings_with(monkeypatch, fn, seeds=300):
    monkeypatch.setattr(pyattn, "scaled_dot_product_attention", fn)
    kinds = collections.Counter()
    for seed in range(seeds):
        try:
            fh.run_one(fh.RngChooser(seed), with_layers=False)
        except fh.Finding as e:
            kinds[e.kind] += 1
    return kinds


def test_oracle_catches_a_wrong_answer(monkeypatch):
    real = pyattn.scaled_dot_product_attention

    def off_by_a_little(*a, **k):
        r = real(*a, **k)
        first = r[0] if isinstance(r, tuple) else r
        if first.size:
            first.flat[0] += 1e-3
        return r
    assert _findings_with(monkeypatch, off_by_a_little)["wrong answer"] > 0


def test_oracle_catches_a_modified_input(monkeypatch):
    real = pyattn.scaled_dot_product_attention

    def writes_query(q, k, v, **kw):
        r = real(q, k, v, **kw)
        if q.size and q.flags.writeable:
            q.flat[-1] = 5
        return r
    assert _findings_with(monkeypatch, writes_query)["modified input"] > 0


def test_oracle_catches_a_missed_error(monkeypatch):
    real = pyattn.scaled_dot_product_attention

    def accepts_bad_values(*a, **k):
        try:
            return real(*a, **k)
        except ValueError:
            return np.zeros(1, np.float32)
    assert _findings_with(monkeypatch, accepts_bad_values)["missed error"] > 0


def test_oracle_catches_an_unclear_message(monkeypatch):
    real = pyattn.scaled_dot_product_attention

    def vague(*a, **k):
        try:
            return real(*a, **k)
        except TypeError:
            raise TypeError("bad input") from None
    assert _findings_with(monkeypatch, vague)["unclear error"] > 0


def test_seed_28746_large_scale_in_float32():
    """A case the campaign flagged: float32, scale=3 with E=65 makes the
    scores ~24x larger than the default scale does (|s| up to 90, where a
    float32 ulp is 7.6e-6), so their rounding alone moves outputs by ~9e-6
    (the float64 path is within 4e-15). The harness scales its tolerance by
    |scale| * sqrt(E); the case must pass with that."""
    assert fh.run_one(fh.RngChooser(28746)) == ["ok"]
