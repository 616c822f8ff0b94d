"""What every use case works with, built once by PairingService."""

from __future__ import annotations

from dataclasses import dataclass

from domain.application.dispatch import KeyTurns
from domain.application.engine_actions import EngineActions
from domain.application.registry import Registry
from domain.application.store_calls import StoreAccess


@dataclass(frozen=True)
class Shared:
    """The keys' turns, the store, what this process runs, and what a saved change asks
    of the engine, the watchdog and the lease."""

    turns: KeyTurns
    store: StoreAccess
    registry: Registry
    actions: EngineActions


class UseCases:
    """Base of the classes whose methods are use cases: the shared parts, at hand."""

    def __init__(self, shared: Shared) -> None:
        self._turns = shared.turns
        self._store = shared.store
        self._registry = shared.registry
        self._actions = shared.actions
        self._leases = shared.actions.leases
