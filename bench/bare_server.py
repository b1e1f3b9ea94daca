"""Baseline: a bare python-socketio server that emits pre-built batches in a loop, as a
tutorial would (default packet class, stdlib json). `python -m bench.bare_server LOG PORT`."""

from __future__ import annotations

import sys

import pyarrow as pa
import socketio
from aiohttp import web

from recorder.log import Log


def main() -> None:
    log, port, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    batches = []
    for batch in Log(log).iter_batches(batch_rows=rows):
        d = batch.to_pydict()
        d["ts"] = batch.column(1).cast(pa.int64()).to_pylist()
        batches.append({"log": "bare", **d, "sma": [None] * batch.num_rows})
    binary = []
    for batch in Log(log).iter_batches(batch_rows=65_536):  # as ticktape's arrow batches
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as w:
            w.write_batch(batch)
        binary.append(bytes(sink.getvalue()))
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)

    @sio.on("subscribe")
    async def subscribe(sid: str, data: dict) -> dict:  # type: ignore[type-arg]
        payloads = binary if data.get("encoding") == "arrow" else batches

        async def loop() -> None:
            for payload in payloads:
                await sio.emit("ticks", payload, to=sid)
            await sio.emit("end", {"log": "bare"}, to=sid)

        sio.start_background_task(loop)
        return {"ok": True}

    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
