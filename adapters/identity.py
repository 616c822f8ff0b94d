"""Who is asking: access tokens mapped to identities (PAIRGATE_TOKENS)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

DEFAULT_IDENTITY = "default"


class Identities:
    """With no tokens configured, every client is the one default identity."""

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        self._tokens = dict(tokens or {})  # token -> identity

    @classmethod
    def parse(cls, spec: str) -> Identities:
        """From `identity:token` pairs separated by commas or new lines."""
        tokens: dict[str, str] = {}
        for number, pair in enumerate(spec.replace("\n", ",").split(","), start=1):
            if not pair.strip():
                continue
            identity, _, token = pair.strip().partition(":")
            if not identity or not token:
                raise ValueError(f"entry {number} is not identity:token")
            if token in tokens:
                raise ValueError(f"entry {number} repeats another identity's token")
            tokens[token] = identity
        return cls(tokens)

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    @property
    def secrets(self) -> list[str]:
        """The tokens themselves: for the log to take out of every line."""
        return list(self._tokens)

    @property
    def names(self) -> list[str]:
        return sorted(set(self._tokens.values()))

    def identify(self, token: object) -> str | None:
        """The token's identity, or None. Compares with every token in constant time."""
        if not self.required:
            return DEFAULT_IDENTITY
        if not isinstance(token, str):
            return None
        found = None
        for known, identity in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = identity
        return found

    def from_bearer(self, authorization: str | None) -> str | None:
        scheme, _, token = (authorization or "").partition(" ")
        return self.identify(token.strip() if scheme.lower() == "bearer" else None)

    def holder(self, identity: str, address: str) -> str:
        """Whom limits and caps count a request against: its identity or, without tokens
        (everyone is the one default identity), its client's address. Identities cannot
        contain a colon, so the two never mix."""
        return identity if self.required else f"address:{address}"
