"""What other processes may ask of the one running a key, over the leases' NOTIFY."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.engines.simulator import simulator_commands
from adapters.store.leases import Handler

if TYPE_CHECKING:
    from entrypoints.bootstrap import Pairgate


def forwarded_commands(pairgate: Pairgate) -> dict[str, Handler]:
    """What other processes may ask of the one running a key (over the leases)."""
    service, simulator = pairgate.service, pairgate.simulator

    async def logout(key: str, args: dict[str, str]) -> None:
        await service.logout(key, args["owner"])

    async def delete(key: str, args: dict[str, str]) -> None:
        await service.delete(key, args["owner"])

    commands: dict[str, Handler] = {"logout": logout, "delete": delete}
    if simulator is not None:
        commands |= simulator_commands(simulator)
    return commands
