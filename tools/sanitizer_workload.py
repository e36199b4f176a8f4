"""Every public entry point of pyattn, a few times each, for the
LeakSanitizer and valgrind runs (tools/sanitize.sh, tools/valgrind_check.sh):
plain calls, calls whose arguments are converted (masks, lengths, windows,
GQA, strided views), weights and lse, out=, refused arguments, additive attention, merge,
KVCache append/attend/refused append/reset, MultiHeadAttention, the global
thread setting and the half types.

    python tools/sanitizer_workload.py [rounds]
"""

import sys

import numpy as np

import pyattn

try:
    import ml_dtypes
except ImportError:
    ml_dtypes = None


def expect(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc:
        return
    raise AssertionError(f"{fn.__name__} accepted bad arguments {kwargs}")


def one_round(rng, threads):
    sdpa = pyattn.scaled_dot_product_attention
    q = rng.standard_normal((2, 4, 33, 16)).astype(np.float32)
    k = rng.standard_normal((2, 4, 47, 16)).astype(np.float32)
    v = rng.standard_normal((2, 4, 47, 8)).astype(np.float32)
    sdpa(q, k, v, num_threads=threads)                                     # plain
    sdpa(q, k, v, is_causal="lower_right", num_threads=threads)
    mask = rng.standard_normal((33, 47)) > 0
    sdpa(q, k, v, attn_mask=mask, window=(4, 2), kv_lengths=np.array([40, 47]),
         num_threads=threads)                                              # options
    sdpa(q, k, v, attn_mask=rng.standard_normal((4, 1, 47)).astype(np.float16),
         return_weights=True, return_lse=True, num_threads=threads)
    sdpa(q[..., ::2, :], np.swapaxes(k.copy().swapaxes(-1, -2), -1, -2), v[:, ::-1])
    sdpa(q, k[:, :2], v[:, :2], enable_gqa=True, return_lse=True)
    out = np.empty((2, 4, 33, 8), np.float32)
    sdpa(q, k, v, out=out)
    sdpa(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), return_weights=True)
    sdpa(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16), is_causal=True)
    if ml_dtypes is not None:
        b = ml_dtypes.bfloat16
        sdpa(q.astype(b), k.astype(b), v.astype(b), return_weights=True)
    sdpa(np.zeros((1, 0, 4), np.float32), np.zeros((1, 3, 4), np.float32), np.zeros((1, 3, 2), np.float32))
    big = rng.standard_normal((1, 1, 300, 32)).astype(np.float32)
    sdpa(big, big, big, return_weights=True, num_threads=threads)           # the kept weights buffer
    # refused arguments
    expect(ValueError, sdpa, q, k, v, num_threads=0)
    expect(TypeError, sdpa, q, k, v.astype(np.float64))
    expect(ValueError, sdpa, q, k, v, out=np.empty((2, 4, 33, 8), np.float32)[..., ::-1].copy()[:1])
    expect(ValueError, sdpa, q, k, v, kv_lengths=np.array([99, 1]))
    huge = np.lib.stride_tricks.as_strided(np.ones(4, np.float32), (2**24, 2**24, 4), (0, 0, 4))
    expect((MemoryError, ValueError), sdpa, huge, huge, huge)
    # additive
    wq = rng.standard_normal((16, 8)).astype(np.float32)
    wk = rng.standard_normal((16, 8)).astype(np.float32)
    va = rng.standard_normal(8).astype(np.float32)
    pyattn.additive_attention(q, k, v, va, w_query=wq, w_key=wk, bias=va, is_causal=True,
                              return_weights=True, num_threads=threads)
    pyattn.additive_attention(q, k, v, rng.standard_normal(16).astype(np.float32), return_lse=True)
    expect(ValueError, pyattn.additive_attention, q, k, v, va)
    # merge
    o1, l1 = sdpa(q, k[:, :, :20], v[:, :, :20], return_lse=True)
    o2, l2 = sdpa(q, k[:, :, 20:], v[:, :, 20:], return_lse=True)
    pyattn.merge_attention_states([o1, o2], [l1, l2])
    expect(ValueError, pyattn.merge_attention_states, [], [])
    # KVCache
    cache = pyattn.KVCache(2, 2, 16, 40)
    cache.append(k[:, :2, :10], v[:, :2, :10, :].repeat(2, -1))
    cache.attend(q[:, :, :3], return_lse=True)
    expect(ValueError, cache.append, k[:, :2], v[:, :2].repeat(2, -1))
    cache.reset(0)
    cache.attend(q[:, :, :1])
    # MultiHeadAttention
    mha = pyattn.MultiHeadAttention(16, 4, num_kv_heads=2, batch_first=True)
    x = rng.standard_normal((2, 9, 16)).astype(np.float32)
    mha(x, x, x, key_padding_mask=np.zeros((2, 9), bool))
    mha(x, x, x, need_weights=False, is_causal=True, attn_mask=np.triu(np.ones((9, 9), bool), 1))
    expect((TypeError, ValueError), pyattn.MultiHeadAttention, 6, 4)


def main(rounds=3):
    rng = np.random.default_rng(0)
    pyattn.set_num_threads(2)
    for i in range(rounds):
        one_round(rng, threads=(None, 1, 2)[i % 3])
    print("workload done:", pyattn.get_config()["openmp"])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
