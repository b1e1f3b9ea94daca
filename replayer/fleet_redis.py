"""Fleet mode's Redis side: timings, key scripts (Lua, each atomic), connection options and
python-socketio's Redis manager routed to the relays (docs/operations.md#a-fleet)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import socketio

from replayer.protocol import SubscribeRequest

__all__ = ["LEASE_TTL", "MEMBERS_TTL", "POLL", "RETRY", "ROOM_PREFIX", "SCRIPTS", "STATE_TTL",
           "FleetManager", "broadcast_id", "ms", "redis_options", "redis_url"]

LEASE_TTL = 2.0  # s: a dead leader is replaced within LEASE_TTL + POLL (+ its first read)
POLL = 0.25  # s between lease renewals and takeover attempts
MEMBERS_TTL = 2.0  # s: a process's announcement of members lapses this long after its last
STATE_TTL = 30.0  # s: a broadcast nobody renews is forgotten after this long
RETRY = 0.1  # s between attempts to publish a batch while Redis does not answer
ROOM_PREFIX = "ticktape:bcast:"

# Every process: announce or withdraw members, then tell what to do.
#   follow: a leader plays it; takeover: it has no leader, play on from `next`;
#   start: none is playing, play from ARGV[2]; ended: it ended; wait: try again.
JOIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[1])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5]) * 4)
else
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if ARGV[7] == 'leave' then return {'left', ''} end
local holder = redis.call('GET', KEYS[1])
local nxt = redis.call('HGET', KEYS[2], 'next')
local ended = redis.call('HGET', KEYS[2], 'ended')
if holder then
  if nxt and not ended then return {'follow', nxt} end
  return {'wait', ''}
end
if nxt and not ended then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {'takeover', nxt}
end
if ended and ARGV[7] == 'poll' then return {'ended', ''} end
if ARGV[7] == 'poll' and ARGV[2] == '-1' then return {'wait', ''} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'next', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {'start', ARGV[2]}
"""

# The leader, every POLL: keep the lease (taking it back if Redis lost it), restore the
# position if Redis lost it, and count the processes that still have members. -1: lost.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[4]) * 4)
else
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if redis.call('HEXISTS', KEYS[2], 'next') == 0 then
  redis.call('HSET', KEYS[2], 'next', ARGV[6])
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
return redis.call('ZCARD', KEYS[3])
"""

# The leader, for every batch: publish it exactly when the position moves past it.
#   1: published; 0: published before (a retry whose first answer was lost); -1: not leader.
PUBLISH = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return -1 end
local cur = redis.call('HGET', KEYS[2], 'next')
if cur and cur ~= ARGV[2] then
  if tonumber(cur) >= tonumber(ARGV[3]) and cur ~= ARGV[2] then return 0 end
  return -1
end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[6]) end
redis.call('HSET', KEYS[2], 'next', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# The leader stops: at the end of the log (ended), or with no members left anywhere (only if
# still none: a process may have just joined), or handing over on shutdown (lease only).
STOP = """
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] then return 0 end
if ARGV[2] == 'ended' then
  redis.call('HSET', KEYS[2], 'ended', '1')
  redis.call('PEXPIRE', KEYS[2], 10000)
elseif ARGV[2] == 'idle' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) > 0 then return 0 end
  redis.call('DEL', KEYS[2])
end
redis.call('DEL', KEYS[1])
return 1
"""


def redis_options() -> dict[str, Any]:
    """RESP2, explicitly: python-socketio's manager reads pub/sub messages as RESP2 replies
    (python-socketio issue #1585: with redis-py 8's RESP3 default it loops on "Cannot
    receive from redis"). Timeouts so a vanished Redis is noticed, not waited on."""
    return {"protocol": 2, "socket_connect_timeout": 2.0, "health_check_interval": 5}


def redis_url(url: str) -> str:
    """valkey:// and valkeys:// as redis-py spells them: Valkey speaks the same protocol."""
    parts = urlsplit(url)
    scheme = {"valkey": "redis", "valkeys": "rediss"}.get(parts.scheme, parts.scheme)
    return urlunsplit(parts._replace(scheme=scheme))


def broadcast_id(request: SubscribeRequest) -> str:
    """The same broadcast gets the same id on every process."""
    key = [request.log, request.speed, request.sma, request.symbols, request.loop]
    return hashlib.sha256(orjson.dumps(key)).hexdigest()[:20]


class FleetManager(socketio.AsyncRedisManager):
    """python-socketio's Redis manager; a broadcast room's messages go to its relay here."""

    def __init__(self, url: str, channel: str, route: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(redis_url(url), channel=channel, redis_options=redis_options())
        self.route = route

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if not self.route(message):
            await super()._handle_emit(message)


# name -> Lua text, registered once per process (Fleet.__init__).
SCRIPTS = {"join": JOIN, "renew": RENEW, "publish": PUBLISH, "stop": STOP}


def ms(seconds: float) -> int:
    return int(seconds * 1000)
