"""`pairgate serve`: the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from entrypoints.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pairgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the Socket.IO pairing service")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument(
        "--simulate",
        action="store_true",
        default=None,
        help="serve every engine name with the built-in simulator (offline)",
    )
    serve.add_argument("--data-dir", help="where the SQLite event store lives (default ./data)")
    args = parser.parse_args(argv)

    overrides = {
        name: value for name, value in vars(args).items() if name != "command" and value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as invalid:
        for problem in invalid.errors(include_url=False, include_input=False):
            name = "PAIRGATE_" + "_".join(str(part) for part in problem["loc"]).upper()
            print(f"pairgate: {name}: {problem['msg']}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve_forever(settings)
    return 2


def serve_forever(settings: Settings) -> int:
    import uvicorn

    from entrypoints.asgi import create_app
    from entrypoints.server import PairgateServer

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    PairgateServer(config).run()
    return 0
