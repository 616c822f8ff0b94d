"""The Socket.IO server as the settings make it: its bounds, and its fan-out between
processes (Redis pub/sub, or this process alone)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets

import socketio

from adapters.socketio.rooms import IndexedManager
from adapters.socketio.server import BoundedAsyncServer
from adapters.socketio.signed_fanout import SignedRedisManager
from adapters.store.config import StoreConfig
from entrypoints.settings import Settings

log = logging.getLogger("pairgate")


def socketio_server(settings: Settings, store: StoreConfig) -> BoundedAsyncServer:
    origins = settings.allowed_origins
    return BoundedAsyncServer(
        async_mode="asgi",
        # None: same origin only. ([] would disable the Origin check altogether.)
        cors_allowed_origins="*" if "*" in origins else (list(origins) or None),
        max_http_buffer_size=settings.max_payload_bytes,
        max_handshakes_per_address=settings.max_handshakes_per_address,
        max_sessions_per_address=settings.max_connections_per_address,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.header_timeout,
        transports=list(settings.transports),
        client_manager=fanout_manager(settings.redis, settings.fanout_channel(), store),
    )


def fanout_manager(
    redis_url: str | None, channel: str, store: StoreConfig
) -> socketio.AsyncManager:
    """Redis pub/sub carries each emission to every process's clients; else this one's.
    `channel`: the deployment's own (one Redis may serve several deployments), its
    messages signed with the deployment's key (`fanout_key`). Both keep each client's
    rooms (adapters/socketio/rooms.py): a disconnect costs the same whatever the number of
    clients."""
    if redis_url is None:
        return IndexedManager()
    # A bounded connect: a request waits for its emissions before it is answered. (No
    # read timeout: the subscription is idle between emissions.)
    options = {"socket_connect_timeout": 5}
    log.info("fan-out over Redis on channel %s", channel)
    return SignedRedisManager(
        redis_url, key=fanout_key(store), channel=channel, redis_options=options
    )


def fanout_key(store: StoreConfig) -> bytes:
    """What every process of the deployment signs its emissions with: derived from the
    cipher key, else the store's own secret (PostgreSQL), else this process's own (a
    SQLite store is one process's: nobody to share it with)."""
    if store.cipher_key:
        material = base64.b64decode(store.cipher_key)
        return hmac.new(material, b"pairgate fan-out", hashlib.sha256).digest()
    if store.kind == "postgres":
        from adapters.store.fanout_secret import shared_secret

        return shared_secret(store)
    return secrets.token_bytes(32)


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
