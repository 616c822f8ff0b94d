"""Read models hold what events hold: with PAIRGATE_CIPHER_KEY, their text about a session
(its key, name, the reason it ended, a webhook's body) is encrypted like the events
(AES-GCM), and a key that orders or groups rows is stored blinded (a keyed hash)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from eventsourcing.cryptography import AESCipher
from eventsourcing.utils import Environment

SEALED = "enc:"


class Sealer:
    """Without a cipher key, `seal`, `open` and `blind` give back what they are given."""

    def __init__(self, cipher_key: str | None = None) -> None:
        self._cipher = None
        self._blinding = b""
        if cipher_key:
            self._cipher = AESCipher(Environment(env={"CIPHER_KEY": cipher_key}))
            key = base64.b64decode(cipher_key)
            self._blinding = hashlib.sha256(b"pairgate blind index\0" + key).digest()

    @property
    def encrypts(self) -> bool:
        return self._cipher is not None

    def seal(self, text: str | None) -> str | None:
        if text is None or self._cipher is None:
            return text
        return SEALED + base64.b64encode(self._cipher.encrypt(text.encode())).decode()

    def open(self, text: str | None) -> str | None:
        if text is None or not text.startswith(SEALED):
            return text
        if self._cipher is None:
            raise ValueError("a read model is encrypted: set PAIRGATE_CIPHER_KEY")
        return self._cipher.decrypt(base64.b64decode(text[len(SEALED) :])).decode()

    def blind(self, key: str) -> str:
        """The same for the same key, and nothing to read a key from (with a cipher)."""
        if self._cipher is None:
            return key
        return hmac.new(self._blinding, key.encode(), hashlib.sha256).hexdigest()
