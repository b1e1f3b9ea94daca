"""Block: normalized trades as numpy columns, and the one order and duplicate rule all formats share.

Order: by `ts`, then trade id (as integers when the format's ids are integers, else by
length then characters, which is integer order for canonical integers), then the
(venue, symbol) pair code; ties keep input order (files ranked by path, then row order).
Duplicates: adjacent rows equal in ts, trade id and pair. A row without a trade id is
never a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recorder.log.schema import SIDES

__all__ = ["BUY", "SELL", "UNKNOWN", "Block", "PairTable", "dedupe", "sort_block"]

BUY, SELL, UNKNOWN = (np.int8(SIDES.index(s)) for s in ("buy", "sell", "unknown"))


@dataclass
class PairTable:
    """(venue, symbol) pairs seen so far, as small integer codes; remembers the native symbol."""

    pairs: list[tuple[str | None, str]] = field(default_factory=list)
    native: dict[str, str] = field(default_factory=dict)  # normalized symbol -> exchange's own
    _codes: dict[tuple[str | None, str], int] = field(default_factory=dict)

    def code(self, venue: str | None, symbol: str, native: str | None = None) -> int:
        key = (venue, symbol)
        if key not in self._codes:
            self._codes[key] = len(self.pairs)
            self.pairs.append(key)
        if native is not None:
            self.native.setdefault(symbol, native)
        return self._codes[key]


@dataclass
class Block:
    """Trades of one source (or of a merge step). Exactly one of `key` (integer trade ids) and
    `ids` (string trade ids, nulls allowed) is set; `recv` only for formats that carry it."""

    ts: np.ndarray  # int64 ns since the epoch
    price: np.ndarray  # float64
    size: np.ndarray  # float64
    side: np.ndarray  # int8 index into SIDES
    pair: np.ndarray  # int32 PairTable code
    key: np.ndarray | None = None  # int64 trade ids
    ids: pa.Array | None = None  # string trade ids
    recv: np.ndarray | None = None  # int64 ns

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, start: int, stop: int) -> Block:
        return Block(self.ts[start:stop], self.price[start:stop], self.size[start:stop],
                     self.side[start:stop], self.pair[start:stop],
                     None if self.key is None else self.key[start:stop],
                     None if self.ids is None else self.ids.slice(start, stop - start),
                     None if self.recv is None else self.recv[start:stop])

    def take(self, index: np.ndarray) -> Block:
        return Block(self.ts[index], self.price[index], self.size[index], self.side[index],
                     self.pair[index], None if self.key is None else self.key[index],
                     None if self.ids is None else self.ids.take(pa.array(index)),
                     None if self.recv is None else self.recv[index])

    @staticmethod
    def concat(blocks: Sequence[Block]) -> Block:
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(b, name) for b in blocks])

        ids = None
        if first.ids is not None:
            ids = pa.concat_arrays([b.ids for b in blocks if b.ids is not None])
        return Block(cat("ts"), cat("price"), cat("size"), cat("side"), cat("pair"),
                     None if first.key is None else cat("key"), ids,
                     None if first.recv is None else cat("recv"))

    # -- the shared order ----------------------------------------------------------------
    def _id_keys(self) -> list[np.ndarray]:
        """Sort keys for the trade id, least significant first (np.lexsort order)."""
        if self.key is not None:
            return [self.key]
        assert self.ids is not None
        # Dense ranks stand for the strings (equal ids, equal ranks); nulls rank last.
        rank = pc.rank(self.ids, sort_keys="ascending", tiebreaker="dense").to_numpy()
        rank = rank.astype(np.int64)
        length = pc.fill_null(pc.binary_length(self.ids), np.iinfo(np.int32).max)
        return [rank, length.to_numpy().astype(np.int64)]

    def is_sorted(self) -> bool:
        """True if already in the shared order (checked without sorting)."""
        if len(self) < 2:
            return True
        if self.key is None:
            return False  # string ids: cheaper to sort than to compare
        dts = np.diff(self.ts)
        return bool(np.all((dts > 0) | ((dts == 0) & (np.diff(self.key) > 0))))


def sort_block(block: Block) -> Block:
    """The block in the shared order; stable, so equal keys keep their input order."""
    if block.is_sorted():
        return block
    order = np.lexsort((block.pair, *block._id_keys(), block.ts))
    return block.take(order)


def dedupe(block: Block) -> tuple[Block, int]:
    """Drop rows equal to the previous one in ts, trade id and pair (block in the shared order)."""
    if len(block) < 2:
        return block, 0
    same = (block.ts[1:] == block.ts[:-1]) & (block.pair[1:] == block.pair[:-1])
    if not same.any():
        return block, 0
    if block.key is not None:
        same &= block.key[1:] == block.key[:-1]
    else:
        assert block.ids is not None
        n = len(block)
        equal = pc.equal(block.ids.slice(1, n - 1), block.ids.slice(0, n - 1))
        same &= pc.fill_null(equal, False).to_numpy(zero_copy_only=False)
    dropped = int(same.sum())
    if not dropped:
        return block, 0
    keep = np.concatenate(([True], ~same))
    return block.take(np.flatnonzero(keep)), dropped
