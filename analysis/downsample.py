"""Min/max-per-bucket (M4) downsampling over a stream, so a 100M-point series draws as ~4 points
per pixel column with every extreme kept."""

from __future__ import annotations

import numpy as np

__all__ = ["M4Downsampler"]


class M4Downsampler:
    """Keeps, for each of `buckets` equal time buckets over [t0, t1], the first, last, lowest
    and highest point of a series; feed batches in time order, then call `points()`."""

    def __init__(self, t0_ns: int, t1_ns: int, buckets: int) -> None:
        self.t0 = t0_ns
        self.width = max(1, -(-(t1_ns - t0_ns + 1) // buckets))
        self.buckets = buckets
        shape = (4, buckets)  # rows: first, last, min, max
        self.ts = np.zeros(shape, np.int64)
        self.val = np.full(shape, np.nan)

    def update(self, ts_ns: np.ndarray, values: np.ndarray) -> None:
        keep = ~np.isnan(values)
        if not keep.all():
            ts_ns, values = ts_ns[keep], values[keep]
        if len(values) == 0:
            return
        bucket = np.clip((ts_ns - self.t0) // self.width, 0, self.buckets - 1)
        first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        last = np.r_[first[1:] - 1, len(bucket) - 1]
        ids = bucket[first]
        lo = np.minimum.reduceat(values, first)
        hi = np.maximum.reduceat(values, first)
        counts = np.diff(np.r_[first, len(bucket)])
        lo_row = self._first_match(values, np.repeat(lo, counts), bucket)
        hi_row = self._first_match(values, np.repeat(hi, counts), bucket)
        fresh = np.isnan(self.val[0, ids])
        self._put(0, ids[fresh], ts_ns[first[fresh]], values[first[fresh]])
        self._put(1, ids, ts_ns[last], values[last])
        better = ~(self.val[2, ids] <= lo)  # NaN (empty) compares False, so it is replaced
        self._put(2, ids[better], ts_ns[lo_row[better]], lo[better])
        better = ~(self.val[3, ids] >= hi)
        self._put(3, ids[better], ts_ns[hi_row[better]], hi[better])

    @staticmethod
    def _first_match(values: np.ndarray, target: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(values == target)
        _, first = np.unique(bucket[rows], return_index=True)
        return rows[first]

    def _put(self, row: int, ids: np.ndarray, ts: np.ndarray, values: np.ndarray) -> None:
        self.ts[row, ids] = ts
        self.val[row, ids] = values

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(ts_ns, values) of the kept points in time order, without repeats."""
        used = ~np.isnan(self.val[0])
        ts = self.ts[:, used].T.ravel()
        val = self.val[:, used].T.ravel()
        order = np.lexsort((val, ts))
        ts, val = ts[order], val[order]
        distinct = np.r_[True, (ts[1:] != ts[:-1]) | (val[1:] != val[:-1])]
        return ts[distinct], val[distinct]
