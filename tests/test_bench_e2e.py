"""Smoke tests of ``pyattn-bench --e2e`` and ``--neighbours`` (tiny sizes,
one round): they run and print their tables. No timing assertions."""

import io

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.integration


def test_e2e_smoke():
    pytest.importorskip("transformers")
    from pyattn.bench.e2e import run_e2e

    out = io.StringIO()
    rows, agree = run_e2e([1], prefill=24, decode=3, rounds=1, out=out, progress=False)
    text = out.getvalue()
    assert agree, text
    assert {r["impl"] for r in rows} == {"pyattn", "sdpa"}
    assert all(r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0 for r in rows)
    assert "prefill tok/s" in text and "equal for both backends" in text


def test_neighbours_smoke():
    import pyattn
    from pyattn.bench.neighbours import run_neighbours

    before = (pyattn.get_thread_wait(), pyattn._core.num_threads_set(), pyattn.get_num_threads(), torch.get_num_threads())
    out = io.StringIO()
    med = run_neighbours(threads=1, rounds=1, block=2, out=out, progress=False)
    assert (pyattn.get_thread_wait(), pyattn._core.num_threads_set(), pyattn.get_num_threads(),
            torch.get_num_threads()) == before
    assert "torch mm after pyattn [passive]" in med and all(t > 0 for t in med.values())
    assert "after/alone" in out.getvalue() and "after/add" in out.getvalue()
    assert "rounds 25-75%" in out.getvalue()
    assert "torch mm after torch add [active]" in med and "pyattn after torch add [passive]" in med
    assert "torch mm after torch sdpa [active]" in med and "torch sdpa:" in out.getvalue()
