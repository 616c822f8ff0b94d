"""Which engine serves which engine name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from domain.application.ports import WhatsAppEngine
from domain.model.errors import EngineUnavailableError, UnknownEngineError

# Every engine name pairgate knows; `whatsmeow` is neonize's alias.
KNOWN_ENGINES = ("neonize", "whatsmeow", "baileys", "simulator")


class Engines:
    """EngineCatalog over the engines this process actually has."""

    def __init__(
        self, available: Mapping[str, WhatsAppEngine], missing: Mapping[str, str] | None = None
    ) -> None:
        """`missing`: engines this process cannot run, each with a hint on how to get it."""
        self._available = dict(available)
        self._missing = dict(missing or {})
        # Checks a pairing's proxy before each dial (adapters/engines/proxies.py); unset:
        # every proxy is dialed as it is.
        self.proxies: Callable[[str], Awaitable[str]] | None = None

    @classmethod
    def simulated(cls, simulator: WhatsAppEngine) -> Engines:
        """Simulator mode: every known name is served offline by the simulator."""
        return cls({name: simulator for name in KNOWN_ENGINES})

    @property
    def distinct(self) -> list[WhatsAppEngine]:
        """Each engine once (one engine may serve several names)."""
        return list({id(engine): engine for engine in self._available.values()}.values())

    @property
    def names(self) -> list[str]:
        return sorted(self._available)

    def resolve(self, name: str) -> WhatsAppEngine:
        engine = self._available.get(name)
        if engine is not None:
            return engine
        if name in self._missing:
            raise EngineUnavailableError(
                f"engine {name!r} is not available on this server: {self._missing[name]}"
            )
        if name in KNOWN_ENGINES:
            raise EngineUnavailableError(
                f"engine {name!r} is not available on this server; {self._offer()}"
            )
        raise UnknownEngineError(f"engine {name[:32]!r} is not available; {self._offer()}")

    async def dialable(self, proxy: str) -> str:
        return proxy if self.proxies is None else await self.proxies(proxy)

    def _offer(self) -> str:
        if not self._available:
            return (
                "no engine is installed "
                "(run `pairgate serve --simulate`, or install pairgate[neonize])"
            )
        return "use one of: " + ", ".join(self.names)
