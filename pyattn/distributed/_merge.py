"""Running merge of partial attention results over disjoint key sets.

The same combination as pyattn.merge_attention_states -- lse = logsumexp of
the parts' lse, out = sum_p exp(lse_p - lse) out_p, parts with lse = -inf
contributing nothing whatever their output holds -- computed part by part
into one accumulator, so a rank keeps O(rows) state instead of every part.
Parts may cover any range of the rows. Computed in the outputs' dtype
(float32 or float64); the order of the parts fixes the rounding.
"""

from __future__ import annotations

import numpy as np


class RunningMerge:
    def __init__(self, batch: tuple, L: int, Ev: int, dtype):
        self.acc = np.zeros(batch + (L, Ev), dtype)  # sum of weights * out, relative to m
        self.m = np.full(batch + (L,), -np.inf, dtype)  # running max of the parts' lse
        self.s = np.zeros(batch + (L,), dtype)  # sum of exp(lse_p - m)

    def add(self, lo: int, hi: int, out, lse) -> None:
        """Merges a part for rows [lo, hi): `out` (batch..., hi - lo, Ev) --
        overwritten (it is scratch) -- and its `lse` (batch..., hi - lo)."""
        acc, m, s = self.acc[..., lo:hi, :], self.m[..., lo:hi], self.s[..., lo:hi]
        with np.errstate(invalid="ignore", over="ignore"):
            new_m = np.maximum(m, lse)
            ref = np.where(new_m == -np.inf, 0, new_m)  # exp(-inf - 0) = 0 where nothing is visible
            old_w = np.exp(m - ref)
            w = np.exp(lse - ref)
            acc *= old_w[..., None]
            np.multiply(out, w[..., None], out=out)
            np.add(acc, out, out=acc, where=(w != 0)[..., None])  # a w = 0 part adds nothing, even NaN
            s *= old_w
            s += w
            m[...] = new_m

    def result(self):
        """(out, lse): rows that saw no key get out 0 and lse -inf."""
        acc, m, s = self.acc, self.m, self.s
        seen = m != -np.inf
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            np.divide(acc, s[..., None], out=acc, where=seen[..., None])
            lse = np.add(m, np.log(s, where=seen, out=np.ones_like(s)), out=m)
        return acc, lse
