"""Runs decode.decode on random data and compares every step, bit for bit,
with pyattn.scaled_dot_product_attention on the same cache."""

import numpy as np

import decode
import pyattn


def reference_steps(q, k_new, v_new, k_cache, v_cache, lengths):
    """The same steps through the Python API: (out, lse) like decode's."""
    B, Hq, T, _ = q.shape
    out = np.empty((B, Hq, T, v_new.shape[-1]), q.dtype)
    lse = np.empty((B, Hq, T), q.dtype)
    k_cache, v_cache, lengths = k_cache.copy(), v_cache.copy(), lengths.copy()
    for t in range(T):
        for b in range(B):
            k_cache[b, :, lengths[b]] = k_new[b, :, t]
            v_cache[b, :, lengths[b]] = v_new[b, :, t]
            lengths[b] += 1
        out[:, :, t : t + 1], lse[:, :, t : t + 1] = pyattn.scaled_dot_product_attention(
            q[:, :, t : t + 1], k_cache, v_cache, kv_lengths=lengths, is_causal="lower_right",
            enable_gqa=True, return_lse=True)
    return out, lse


def main(dtype=np.float32, B=3, Hq=8, Hkv=2, E=64, T=24, S_max=64, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, Hq, T, E)).astype(dtype)
    k_new = rng.standard_normal((B, Hkv, T, E)).astype(dtype)
    v_new = rng.standard_normal((B, Hkv, T, E)).astype(dtype)
    k_cache = rng.standard_normal((B, Hkv, S_max, E)).astype(dtype)  # prompts (and unused rows)
    v_cache = rng.standard_normal((B, Hkv, S_max, E)).astype(dtype)
    lengths = rng.integers(0, S_max - T, B).astype(np.int64)          # prompt lengths
    want_out, want_lse = reference_steps(q, k_new, v_new, k_cache, v_cache, lengths)
    out = np.empty_like(want_out)
    lse = np.empty_like(want_lse)
    decode.decode(q, k_new, v_new, k_cache, v_cache, lengths, out, lse)
    assert np.array_equal(out, want_out) and np.array_equal(lse, want_lse)
    print(f"{np.dtype(dtype).name}: {T} steps of {B} sequences, bitwise equal to the Python API")


if __name__ == "__main__":
    main(np.float32)
    main(np.float64)
