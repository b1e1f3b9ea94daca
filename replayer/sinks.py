"""Where a replay's packets go: a client, addressed through Engine.IO (or anything alike)."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ClientSink", "Sink"]


class Sink(Protocol):
    sid: str
    encoding: str

    def depth(self) -> int: ...

    async def send(self, encoded: str | list[Any]) -> int: ...

    async def emit(self, event: str, data: Any) -> None: ...


class ClientSink:
    """One Socket.IO client, addressed through Engine.IO so pre-encoded packets go out as-is."""

    def __init__(self, sio: Any, sid: str, encoding: str) -> None:
        self.sio, self.sid, self.encoding = sio, sid, encoding
        self.eio_sid = sio.manager.eio_sid_from_sid(sid, "/")

    def depth(self) -> int:
        socket = self.sio.eio.sockets.get(self.eio_sid)
        # Packets the transport has not yet taken; engineio keeps no byte count of its own.
        return socket.queue.qsize() if socket is not None else 0

    async def send(self, encoded: str | list[Any]) -> int:
        parts = encoded if isinstance(encoded, list) else [encoded]
        for part in parts:
            await self.sio.eio.send(self.eio_sid, part)
        return sum(len(p) for p in parts)

    async def emit(self, event: str, data: Any) -> None:
        # The client is on this process: in a fleet, nothing to publish to the others.
        await self.sio.emit(event, data, to=self.sid, ignore_queue=True)
