"""Socket.IO fan-out between processes: Redis pub/sub, or this process alone."""

from __future__ import annotations

import asyncio
import logging

import socketio

from adapters.socketio.rooms import IndexedManager, IndexedRedisManager

log = logging.getLogger("pairgate")


def fanout_manager(redis_url: str | None, channel: str) -> socketio.AsyncManager:
    """Redis pub/sub carries each emission to every process's clients; else this one's.
    `channel`: the deployment's own (one Redis may serve several deployments). Both keep
    each client's rooms (adapters/socketio/rooms.py): a disconnect costs the same whatever
    the number of clients."""
    if redis_url is None:
        return IndexedManager()
    # A bounded connect: a request waits for its emissions before it is answered. (No
    # read timeout: the subscription is idle between emissions.)
    options = {"socket_connect_timeout": 5}
    log.info("fan-out over Redis on channel %s", channel)
    return IndexedRedisManager(redis_url, channel=channel, redis_options=options)


async def close_fanout(sio: socketio.AsyncServer) -> None:
    """Stop the Redis listener and close its connections (the library does neither)."""
    manager = sio.manager
    listener = getattr(manager, "thread", None)
    if listener is not None:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    for connection in (getattr(manager, "pubsub", None), getattr(manager, "redis", None)):
        if connection is not None:
            await connection.aclose()
