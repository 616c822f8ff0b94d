"""The simulated phone's moves (scan, pair, log out, ...): what the simulator's HTTP
endpoints and forwarded commands do, by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.engines.simulator import SimulatedEngine

Move = Callable[[str, dict[str, str]], Awaitable[None]]
# The moves that take the code the phone read or its user typed, and what one looks like.
CODE_OF_MOVE = {"scan": "<QR text>", "scan_passkey": "<QR text>", "pair": "ABCD-EFGH"}


def simulated_moves(simulator: SimulatedEngine) -> dict[str, Move]:
    """The simulated phone's moves by name, each taking a key and its arguments (those
    in CODE_OF_MOVE: the code). The HTTP endpoints and the forwarded commands are named
    after these."""

    async def scan(key: str, args: dict[str, str]) -> None:
        await simulator.scan(key, args["code"])

    async def scan_passkey(key: str, args: dict[str, str]) -> None:
        await simulator.scan_passkey_account(key, args["code"])

    async def pair(key: str, args: dict[str, str]) -> None:
        await simulator.enter_pair_code(key, args["code"])

    async def logout(key: str, args: dict[str, str]) -> None:
        await simulator.phone_logout(key)

    async def drop(key: str, args: dict[str, str]) -> None:
        await simulator.drop(key)

    async def revoke(key: str, args: dict[str, str]) -> None:
        await simulator.revoke(key)

    moves: dict[str, Move] = {"scan": scan, "scan_passkey": scan_passkey, "pair": pair}
    return moves | {"logout": logout, "drop": drop, "revoke": revoke}


def simulator_commands(simulator: SimulatedEngine) -> dict[str, Move]:
    """The moves as commands another process can forward here: `sim.<move>`."""
    return {f"sim.{name}": move for name, move in simulated_moves(simulator).items()}
