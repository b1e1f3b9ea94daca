"""Wire encodings of a `ticks` batch, and the Socket.IO packet class that sends them cheaply.

python-socketio's default Packet walks every payload looking for binary data (measured:
1.6 ms per 1,000-tick batch, more than json.dumps itself) and encodes with the stdlib json.
`FastPacket` checks only the top level (where our binary batches sit) and encodes with orjson;
JSON batches are built once as bytes and embedded with `orjson.Fragment`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from socketio import packet as sio_packet

__all__ = ["CARRIED", "MALFORMED_EVENT", "RESERVED_PREFIX", "FastPacket", "JsonColumns", "OrjsonShim",
           "arrow_ticks", "json_ticks", "ticks_packet", "ticks_schema"]

# Optional log columns a replay carries through to clients when the log has them (real data).
CARRIED = ("trade_id", "venue")

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# An event name no client can send (it is not valid JSON input we would produce): the
# decoded form of a packet whose payload is not JSON, so the packet still gets an ack.
MALFORMED_EVENT = "\x00malformed"
# Event names python-socketio would route to the server's own connect/disconnect handlers:
# a client sending them gets an "unknown event" ack instead (prefixed, never routed).
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect"})
RESERVED_PREFIX = "\x00reserved:"


class OrjsonShim:
    """The `json` interface python-socketio/engineio expect, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        try:
            return orjson.dumps(obj, option=_NUMPY).decode()
        except TypeError:
            # orjson refuses str holding lone surrogates; JSON can carry them escaped, and an
            # acknowledgement must never fail to encode. (Ticks never take this path.)
            return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
        try:
            return json.loads(text)  # NaN/Infinity, as stdlib-based clients send them
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than orjson's
            return [MALFORMED_EVENT]


class FastPacket(sio_packet.Packet):
    """Binary detection at the top level only; orjson for encoding and decoding."""

    json = OrjsonShim

    def decode(self, encoded_packet: Any) -> int:
        """Decode, then make any event packet routable to a handler that acknowledges it."""
        attachments = int(super().decode(encoded_packet))
        if self.packet_type in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
            data: Any = vars(self).get("data")  # set by the untyped base class
            if not isinstance(data, list) or not data or not isinstance(data[0], str):
                self.data = [MALFORMED_EVENT]  # python-socketio would index data[0] and fail
            elif data[0] in RESERVED_EVENTS:
                self.data = [RESERVED_PREFIX + data[0], *data[1:]]
        return attachments

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        if isinstance(data, bytes | bytearray):
            return True
        if isinstance(data, list | tuple):
            return any(isinstance(item, bytes | bytearray) for item in data)
        return False


class JsonColumns:
    """A chunk's columns ready for JSON: numpy arrays, and strings as pre-encoded names
    indexed by small codes. Built once per chunk (worker thread); each batch only slices."""

    def __init__(self, log: str, batch: pa.RecordBatch, ts: np.ndarray,
                 symbols: tuple[np.ndarray, list[str]] | None = None) -> None:
        """`symbols`: the batch's symbol codes and names, when the caller has them already."""
        self.log = orjson.dumps(log)
        self.seq = batch.column(0).to_numpy()
        self.ts = ts
        self.price = batch.column(3).to_numpy()
        self.size = batch.column(4).to_numpy()
        if symbols is None:
            self.symbol_codes, self.symbol_names = self._strings(batch.column(2))
        else:
            self.symbol_codes = symbols[0]
            self.symbol_names = np.array([orjson.dumps(s) for s in symbols[1]], dtype=object)
        self.side_codes, self.side_names = self._strings(batch.column(5))
        # Carried optional columns (trade_id, venue), after the required six.
        self.extra = [(orjson.dumps(name), *self._strings(batch.column(i)))
                      for i, name in enumerate(batch.schema.names) if i >= 6]

    @staticmethod
    def _strings(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        encoded = values if pa.types.is_dictionary(values.type) else values.dictionary_encode()
        names = np.array([orjson.dumps(v) for v in encoded.dictionary.to_pylist()], dtype=object)
        return encoded.indices.to_numpy(zero_copy_only=False), names

    @staticmethod
    def _join(names: np.ndarray, codes: np.ndarray) -> bytes:
        return b"[" + b",".join(names[codes].tolist()) + b"]"

    def ticks(self, start: int, stop: int, sma: np.ndarray) -> orjson.Fragment:
        """The columnar `ticks` payload (docs/protocol.md) for rows [start, stop) (NaN SMA -> null)."""
        dumps = orjson.dumps
        return orjson.Fragment(b"".join([
            b'{"log":', self.log,
            b',"seq":', dumps(self.seq[start:stop], option=_NUMPY),
            b',"ts":', dumps(self.ts[start:stop], option=_NUMPY),
            b',"symbol":', self._join(self.symbol_names, self.symbol_codes[start:stop]),
            b',"price":', dumps(self.price[start:stop], option=_NUMPY),
            b',"size":', dumps(self.size[start:stop], option=_NUMPY),
            b',"side":', self._join(self.side_names, self.side_codes[start:stop]),
            b',"sma":', dumps(sma, option=_NUMPY),
            *(part for key, codes, names in self.extra
              for part in (b",", key, b":", self._join(names, codes[start:stop]))),
            b"}",
        ]))


def json_ticks(log: str, batch: pa.RecordBatch, sma: np.ndarray) -> orjson.Fragment:
    """One batch as the `ticks` JSON payload (for callers without a prepared chunk)."""
    ts = batch.column(1).cast(pa.int64()).to_numpy()
    return JsonColumns(log, batch, ts).ticks(0, batch.num_rows, sma)


def ticks_schema(log: str, carried: tuple[str, ...] = ()) -> pa.Schema:
    """The Arrow `ticks` schema: the log's six columns, `sma`, then the carried ones."""
    from recorder.log import SCHEMA

    return pa.schema([*SCHEMA, pa.field("sma", pa.float64()),
                      *(pa.field(name, pa.string()) for name in carried)], metadata={"log": log})


def arrow_ticks(schema: pa.Schema, batch: pa.RecordBatch, sma: np.ndarray) -> bytes:
    """The same batch as Arrow IPC stream bytes (one schema message, one batch)."""
    columns = [*batch.columns[:6], pa.array(sma, mask=np.isnan(sma)), *batch.columns[6:]]
    out = pa.RecordBatch.from_arrays(columns, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(out)
    return bytes(sink.getvalue())


def ticks_packet(log: str, schema: pa.Schema, batch: pa.RecordBatch, sma: np.ndarray,
                 encoding: str, prepared: tuple[JsonColumns, int, int] | None = None
                 ) -> str | list[Any]:
    """A whole Socket.IO `ticks` packet, encoded once and sent as-is to every receiver.
    `prepared`: the chunk's JSON columns and the rows [start, stop) of it `batch` holds."""
    payload: Any
    if encoding == "arrow":
        payload = arrow_ticks(schema, batch, sma)
    elif prepared is not None:
        columns, start, stop = prepared
        payload = columns.ticks(start, stop, sma)
    else:
        payload = json_ticks(log, batch, sma)
    encoded: str | list[Any] = FastPacket(sio_packet.EVENT, data=["ticks", payload],
                                          namespace="/").encode()
    return encoded
