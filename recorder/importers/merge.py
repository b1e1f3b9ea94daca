"""Sources in time order, merged: a k-way merge of sorted streams, and sorted runs for files
that are not in time order.

Memory: a source holds one block; only sources whose time ranges overlap are open at once
(a source opens when the merge reaches its first time), so a month of daily files costs
one or two blocks, not thirty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from recorder.importers.blocks import Block, sort_block

__all__ = ["NotInOrder", "Source", "in_order", "merge", "read_run", "write_run"]


class NotInOrder(Exception):
    """A source's times went backwards: the pipeline sorts that file in runs and starts over."""

    def __init__(self, source: Source) -> None:
        super().__init__(source.name)
        self.source = source


@dataclass(eq=False)
class Source:
    """A stream of blocks in time order; `first_ts` is known before it is opened."""

    name: str
    rank: tuple[int, int]  # (file rank, run index): ties between sources keep this order
    first_ts: int
    open_blocks: Callable[[], Iterator[Block]]
    _blocks: Iterator[Block] | None = field(default=None, repr=False)
    buffer: Block | None = field(default=None, repr=False)
    exhausted: bool = False

    def refill(self) -> None:
        """Make `buffer` non-empty, or mark the source exhausted."""
        if self._blocks is None:
            self._blocks = in_order(self, self.open_blocks())
        while self.buffer is None or not len(self.buffer):
            block = next(self._blocks, None)
            if block is None:
                self.exhausted = True
                return
            self.buffer = block

    def close(self) -> None:
        if self._blocks is not None and hasattr(self._blocks, "close"):
            self._blocks.close()


def in_order(source: Source, blocks: Iterator[Block]) -> Iterator[Block]:
    """The blocks in the shared order, with times strictly increasing from block to block:
    the trailing rows of equal time are held back and joined to the next block, so a tie is
    always sorted as a whole. Raises NotInOrder if times go backwards."""
    carry: Block | None = None
    last = -math.inf
    try:
        for block in blocks:
            if not len(block):
                continue
            if block.ts[0] < last or (len(block) > 1 and bool(np.any(np.diff(block.ts) < 0))):
                raise NotInOrder(source)
            last = int(block.ts[-1])
            if carry is not None:
                block = Block.concat([carry, block])
            cut = int(np.searchsorted(block.ts, block.ts[-1], side="left"))
            carry = block.slice(cut, len(block))
            if cut:
                yield sort_block(block.slice(0, cut))
        if carry is not None and len(carry):
            yield sort_block(carry)
    finally:
        if hasattr(blocks, "close"):
            blocks.close()


def merge(sources: list[Source]) -> Iterator[Block]:
    """All sources' rows in the shared order, in blocks. Rows of equal time always come out in
    the same block, so duplicates (which share their time) meet in one block."""
    pending = sorted(sources, key=lambda s: (s.first_ts, s.rank))
    active: list[Source] = []

    def activate() -> None:
        source = pending.pop(0)
        source.refill()
        if source.buffer is not None and len(source.buffer):
            active.append(source)
            active.sort(key=lambda s: s.rank)

    try:
        while pending or active:
            if not active:
                activate()
                continue
            # Every open source's future rows are later than its buffer's last row.
            bound = min((int(s.buffer.ts[-1]) for s in active
                         if not s.exhausted and s.buffer is not None), default=math.inf)
            if pending and pending[0].first_ts <= bound:
                activate()
                continue
            if pending:
                bound = min(bound, pending[0].first_ts - 1)
            parts = []
            for source in active:
                assert source.buffer is not None
                cut = int(np.searchsorted(source.buffer.ts, bound, side="right"))
                if cut:
                    parts.append(source.buffer.slice(0, cut))
                    source.buffer = source.buffer.slice(cut, len(source.buffer))
            for source in list(active):
                if not source.exhausted and not len(source.buffer or ()):
                    source.refill()
                if source.exhausted and not len(source.buffer or ()):
                    source.close()
                    active.remove(source)
            if parts:
                yield parts[0] if len(parts) == 1 else sort_block(Block.concat(parts))
    finally:
        for source in active + pending:
            source.close()


# -- sorted runs -----------------------------------------------------------------------------
def _to_batch(block: Block) -> pa.RecordBatch:
    columns = {"ts": block.ts, "price": block.price, "size": block.size, "side": block.side,
               "pair": block.pair}
    arrays = [pa.array(v) for v in columns.values()]
    names = list(columns)
    for name, value in (("key", block.key), ("ids", block.ids), ("recv", block.recv)):
        if value is not None:
            arrays.append(value if isinstance(value, pa.Array) else pa.array(value))
            names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _from_batch(batch: pa.RecordBatch) -> Block:
    def col(name: str) -> np.ndarray:
        return batch.column(name).to_numpy()

    names = batch.schema.names
    return Block(col("ts"), col("price"), col("size"), col("side"), col("pair"),
                 col("key") if "key" in names else None,
                 batch.column("ids") if "ids" in names else None,
                 col("recv") if "recv" in names else None)


def write_run(block: Block, path: Path, batch_rows: int = 65_536) -> int:
    """Write a sorted block as an Arrow IPC file (read back in batches); returns its first ts."""
    batch = _to_batch(block)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        for start in range(0, batch.num_rows, batch_rows):
            writer.write_batch(batch.slice(start, batch_rows))
    return int(block.ts[0])


def read_run(path: Path) -> Iterator[Block]:
    with pa.OSFile(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for index in range(reader.num_record_batches):
            yield _from_batch(reader.get_batch(index))
