"""The vectorised exp, exp2 and tanh of every ISA (csrc/kernels/vec_math-inl.h)
against NumPy in a wider precision: the error bounds documented there
(exp, exp2 <= 2 ulp, tanh <= 1.25 ulp) and the special values.

They are reached through the testing hook pyattn._core._vec_math, which
applies the active ISA's function to an array."""

import numpy as np
import pytest

import pyattn._core as core

RNG = np.random.default_rng(1234)


def ulp_error(got, exact, dtype):
    """|got - exact| in units of the last place of `exact` rounded to dtype."""
    exact_r = exact.astype(dtype)
    return np.abs(got.astype(np.longdouble) - exact) / np.spacing(np.abs(exact_r)).astype(np.longdouble)


def exp_inputs(dtype, lo, hi):
    n = 400_000
    x = np.concatenate([np.linspace(lo, hi, n), RNG.uniform(lo, hi, n),
                        RNG.uniform(-1, 1, n // 4), [0.0, -0.0, lo, hi]])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype,lo,hi", [(np.float32, -86.0, 88.37), (np.float64, -707.0, 709.4)])
def test_exp_error_bound(isa, dtype, lo, hi):
    x = exp_inputs(dtype, lo, hi)
    got = core._vec_math("exp", x)
    assert got.dtype == dtype
    err = ulp_error(got, np.exp(x.astype(np.longdouble)), dtype)
    assert float(err.max()) <= 2.0, f"max error {float(err.max()):.3f} ulp at x={x[np.argmax(err)]!r}"


@pytest.mark.parametrize("dtype,cut", [(np.float32, -86.0), (np.float64, -707.0)])
def test_exp_special_values(isa, dtype, cut):
    # Below the cut the result is exactly 0 (no denormals); -inf gives 0; NaN stays NaN.
    x = np.array([cut - 1e-3 * abs(cut), cut * 2, -np.inf, np.nan, 0.0, -0.0], dtype=dtype)
    got = core._vec_math("exp", x)
    assert got[0] == 0 and got[1] == 0 and got[2] == 0
    assert np.isnan(got[3])
    assert got[4] == 1 and got[5] == 1


@pytest.mark.parametrize("dtype,lo,hi", [(np.float32, -124.0, 127.0), (np.float64, -1020.0, 1023.0)])
def test_exp2_error_bound(isa, dtype, lo, hi):
    # The softmax's exponential (scores in log2 units); it only sees x <= 0.
    x = exp_inputs(dtype, lo, hi)
    got = core._vec_math("exp2", x)
    err = ulp_error(got, np.exp2(x.astype(np.longdouble)), dtype)
    assert float(err.max()) <= 2.0, f"max error {float(err.max()):.3f} ulp at x={x[np.argmax(err)]!r}"


@pytest.mark.parametrize("dtype,cut", [(np.float32, -124.0), (np.float64, -1020.0)])
def test_exp2_special_values(isa, dtype, cut):
    x = np.array([cut - 1e-3, cut * 2, -np.inf, np.nan, 0.0, -0.0, -1.0, -10.0], dtype=dtype)
    got = core._vec_math("exp2", x)
    assert got[0] == 0 and got[1] == 0 and got[2] == 0
    assert np.isnan(got[3])
    assert got[4] == 1 and got[5] == 1 and got[6] == 0.5 and got[7] == 2.0 ** -10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_error_bound(isa, dtype):
    n = 300_000
    hi = 10.0 if dtype == np.float32 else 21.0
    mag = np.concatenate([np.linspace(2.0 ** -30, hi, n), RNG.uniform(0, hi, n),
                          np.exp2(RNG.uniform(-40, 0, n // 2)), np.linspace(0.85, 1.05, n // 2)])
    x = np.concatenate([mag, -mag]).astype(dtype)
    got = core._vec_math("tanh", x)
    err = ulp_error(got, np.tanh(x.astype(np.longdouble)), dtype)
    assert float(err.max()) <= 1.25, f"max error {float(err.max()):.3f} ulp at x={x[np.argmax(err)]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_special_values(isa, dtype):
    x = np.array([np.inf, -np.inf, -0.0, 0.0, np.nan, 1e30, -1e30], dtype=dtype)
    got = core._vec_math("tanh", x)
    assert got[0] == 1 and got[1] == -1
    assert got[2] == 0 and np.signbit(got[2]) and got[3] == 0 and not np.signbit(got[3])
    assert np.isnan(got[4])
    assert got[5] == 1 and got[6] == -1


@pytest.mark.parametrize("n", [0, 1, 5, 17, 33])
def test_tails_match_whole_vectors(isa, n):
    # The tail goes through a padded vector: same values as inside an array.
    x = RNG.uniform(-5, 5, 64).astype(np.float32)
    whole = core._vec_math("exp", x)
    assert np.array_equal(core._vec_math("exp", x[:n].copy()), whole[:n])


def test_hook_rejects_bad_input():
    with pytest.raises(ValueError, match="name"):
        core._vec_math("log", np.zeros(3, np.float32))
    assert core._vec_math("exp2", np.array([3.0])) == 8.0
    with pytest.raises(TypeError, match="float32 or float64"):
        core._vec_math("exp", np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="1-D"):
        core._vec_math("exp", np.zeros((2, 2), np.float32))
