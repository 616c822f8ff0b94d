"""Resealer: what `pairgate rekey` does to one sealed value, wherever it is stored.

Everything pairgate encrypts is AES-GCM in eventsourcing's `AESCipher` layout (nonce,
tag, ciphertext): the events (compressed first), the vault's files, the Baileys sidecar's
auth state, the simulator's rows, the read models' texts. A value opens with the new key
(already done: left as it is), or with the old one, or — when there was no old key — is
plain; it is then sealed with the new key. GCM's tag tells the keys apart, so a run that
was killed half-way is simply run again: what it did is skipped, the rest is done.
"""

from __future__ import annotations

import hashlib
from base64 import b64decode

from eventsourcing.cryptography import AESCipher
from eventsourcing.utils import Environment


class ResealError(Exception):
    """A value that opens with neither key."""


def aes(cipher_key: str) -> AESCipher:
    """ValueError unless `cipher_key` is 16, 24 or 32 bytes in base64."""
    return AESCipher(Environment(env={AESCipher.CIPHER_KEY: cipher_key}))


def fingerprint(cipher_key: str | None) -> str | None:
    """A name for a key that reveals nothing of it (the key is 128+ random bits)."""
    if not cipher_key:
        return None
    return hashlib.sha256(b"pairgate key fingerprint\0" + b64decode(cipher_key)).hexdigest()[:16]


class Resealer:
    def __init__(self, old_key: str | None, new_key: str) -> None:
        self.old = aes(old_key) if old_key else None
        self.new = aes(new_key)

    def sealed_with_new(self, data: bytes) -> bool:
        try:
            self.new.decrypt(data)
        except ValueError:
            return False
        return True

    def open_old(self, data: bytes) -> bytes:
        """The plaintext of a value the old key sealed (a value itself without an old key)."""
        if self.old is None:
            return data
        try:
            return self.old.decrypt(data)
        except ValueError:
            raise ResealError("opens with neither the old nor the new key") from None

    def reseal(self, data: bytes) -> bytes | None:
        """`data` sealed with the new key, or None when it already is."""
        if self.sealed_with_new(data):
            return None
        return self.new.encrypt(self.open_old(data))
