"""The command line: `pairgate serve | history | export | rekey | ...`."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from domain.application.history import MAX_PAGE_SIZE, PAGE_SIZE
from entrypoints.settings import SettingError, Settings

SETTINGS_FLAGS = ("host", "port", "simulate", "data_dir")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pairgate", description="Link WhatsApp devices by QR code.")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the Socket.IO pairing service")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument(
        "--simulate",
        action="store_true",
        default=None,
        help="serve every engine name with the built-in simulator (offline)",
    )

    history = commands.add_parser(
        "history", help="a page of a session's recorded events, oldest first"
    )
    history.add_argument("key")
    history.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="VERSION",
        help="the events after this version (the page before said where to go on)",
    )
    history.add_argument(
        "--limit",
        type=int,
        default=PAGE_SIZE,
        metavar="N",
        help=f"events per page (default {PAGE_SIZE}, at most {MAX_PAGE_SIZE})",
    )
    history.add_argument("--at", type=int, metavar="VERSION", help="stop at this version")
    history.add_argument(
        "--json", action="store_true", help='print {"key", "events", "next"} as JSON'
    )

    export = commands.add_parser("export", help="every recorded event as JSON lines")
    export.add_argument(
        "--since",
        type=position,
        default=0,
        metavar="POSITION",
        help="resume after this position (0: from the start)",
    )

    reindex = commands.add_parser(
        "reindex", help="rebuild the sessions read model (GET /api/sessions) from the event log"
    )

    commands.add_parser("keygen", help="print a new PAIRGATE_CIPHER_KEY (AES-256, base64)")
    rekey = commands.add_parser(
        "rekey",
        help="seal the events, read models and credentials with a new cipher key",
        description="The old key is PAIRGATE_CIPHER_KEY (unset: encrypt what is plain); "
        "the new one is read from standard input. Stop pairgate first; run again with the "
        "same keys to finish an interrupted rekey.",
    )
    commands.add_parser("asyncapi", help="print the AsyncAPI 3.0 document of the protocol")
    commands.add_parser("openapi", help="print the OpenAPI 3.1 document of the HTTP API")
    commands.add_parser("lifecycle", help="print the session lifecycle as a Mermaid diagram")

    scan = commands.add_parser(
        "scan",
        help="link a device from this terminal",
        description="Exit status: 0 ready, 1 disconnected, 2 refused, 3 server unreachable.",
    )
    scan.add_argument("key")
    scan.add_argument("--name", help="device name (default: the key)")
    scan.add_argument("--engine", default="baileys", help="engine (default baileys)")
    scan.add_argument(
        "--server", type=server_url, default="http://127.0.0.1:8000", help="pairgate's URL"
    )
    scan.add_argument("--token", help="access token, when the server requires one")
    scan.add_argument(
        "--relink",
        action="store_true",
        help="pair afresh a key still linked to a device (offline): unlinks that device",
    )

    for command in (serve, history, export, reindex, rekey):
        command.add_argument("--data-dir", help="the SQLite event store's directory (./data)")
    return root


def position(text: str) -> int:
    """A notification position: 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a position export printed, not {text!r}")
    return value


def server_url(text: str) -> str:
    """pairgate's URL, with its scheme (socket.io-client guesses nothing)."""
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"must be a URL such as http://127.0.0.1:8000, not {text!r}"
        )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "scan":
        import asyncio

        from entrypoints.scan import scan

        name = args.name or args.key
        return asyncio.run(
            scan(args.server, args.key, name, args.engine, args.token, sys.stdout, args.relink)
        )
    if args.command == "keygen":
        from eventsourcing.cryptography import AESCipher

        print(AESCipher.create_key(num_bytes=32))
        return 0
    if args.command in ("asyncapi", "openapi"):
        from adapters.http import openapi
        from adapters.socketio import asyncapi

        sys.stdout.write({"asyncapi": asyncapi, "openapi": openapi}[args.command].render())
        return 0
    if args.command == "lifecycle":
        from domain.model.lifecycle import state_diagram

        sys.stdout.write(state_diagram())
        return 0
    overrides = {
        name: getattr(args, name)
        for name in SETTINGS_FLAGS
        if getattr(args, name, None) is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as invalid:
        for problem in invalid.errors(include_url=False, include_input=False):
            name = "PAIRGATE_" + "_".join(str(part) for part in problem["loc"]).upper()
            reason = problem["msg"].removeprefix("Value error, ")
            print(f"pairgate: {name}: {reason}", file=sys.stderr)
        return 2
    from adapters.store.config import StoreUnreadableError

    try:
        settings.identities()
        if args.command == "serve":
            return serve_forever(settings)
        if args.command == "rekey":
            from entrypoints.rekey import read_new_key, rekey

            return rekey(settings, read_new_key(sys.stdin), sys.stdout)
        if args.command == "reindex":
            from entrypoints.consumers import rebuild_index

            return rebuild_index(settings, sys.stdout)
        from entrypoints.audit import run_audit

        return run_audit(args, settings, sys.stdout)
    except (SettingError, StoreUnreadableError) as unusable:
        print(f"pairgate: {unusable}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pairgate export | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def serve_forever(settings: Settings) -> int:
    import uvicorn

    from adapters.redis_check import reach_redis
    from adapters.timer_slack import set_timer_slack
    from entrypoints.asgi import create_app
    from entrypoints.logs import configure_logging
    from entrypoints.server import PairgateServer, uvicorn_config

    if settings.redis is not None:
        try:
            reach_redis(settings.redis, REDIS_TIMEOUT)
        except ConnectionError as unreachable:
            raise SettingError("PAIRGATE_REDIS_URL", str(unreachable)) from None
    configure_logging(settings.log_level, settings.log_format, settings.identities().secrets)
    json_logs = settings.log_format == "json"
    config = uvicorn_config(
        create_app(settings),
        settings,
        # JSON: uvicorn's own loggers go through the root handler too.
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
    )
    raise_open_files_limit()
    tune_garbage_collection()
    # The event loop's thread, and the threads and processes it starts, may fire timers
    # late by this much (neonize's Go runtime starts under the kernel's slack).
    set_timer_slack(settings.timer_slack_ms)
    PairgateServer(config).run()
    return 0


# Seconds Redis gets to answer at start-up before `pairgate serve` gives up (exit 2).
REDIS_TIMEOUT = 3.0


def raise_open_files_limit() -> None:
    """Every connection is a file descriptor, and so are the store's files: take all the
    descriptors the hard limit allows (often 1,024 soft against a far higher hard one)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# A server holding thousands of connections keeps, per connection, tasks and buffers that
# live for a QR code's lifetime (~20 s): they outlive the young generations, and with
# CPython's defaults (700, 10, 10) a full collection walks half a million objects about
# once a minute. Collecting the older generations less often cut the CPU of 2,000
# rotating sessions by ~8% (docs/performance.md); memory per idle session did not change.
# The youngest is collected every 2,000 allocations: a collection of 10,000 paused the
# event loop for 3-5 ms, the slowest pairings' wait for their code (p99 create→QR 5.0-5.7
# against 3.5-4.1 ms, the same CPU); the middle one still every 500,000.
GC_THRESHOLDS = (2_000, 250, 100)


def tune_garbage_collection() -> None:
    """Fewer cyclic collections, and none of them walking what start-up built (modules,
    settings, the app), which lives as long as the process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
