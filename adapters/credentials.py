"""CredentialVault: where engines keep each linked device's WhatsApp credentials.

One directory per (engine, key): `<data dir>/credentials/<engine>/<sha256(key)>`, created
0700 (files 0600), so another local user cannot read a device's keys. The key is hashed
so that any client-chosen string is a safe, fixed-length name. Files written through the
vault are encrypted with AES-GCM when pairgate has a cipher key. The Baileys sidecar
seals its auth state the same way with the same key (`cipher_key`); whatsmeow writes its
SQLite store there itself, protected by the directory's permissions only. `rekey` seals
every device's files with a new key (`pairgate rekey`, entrypoints/rekey.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from eventsourcing.cryptography import AESCipher
from eventsourcing.utils import Environment

from adapters.resealing import Resealer, ResealError

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


NOT_THIS_KEY = "cannot be decrypted: is PAIRGATE_CIPHER_KEY the key they were written with?"


class CredentialsUnreadableError(Exception):
    """Stored credentials cannot be decrypted with the configured cipher key."""


class CredentialVault:
    def __init__(self, root: Path, cipher_key: str | None = None) -> None:
        self.root = root
        # For an engine that seals its own files (in another process) as `seal` does.
        self.cipher_key = cipher_key or None
        self._cipher = None
        if cipher_key:
            self._cipher = AESCipher(Environment(env={AESCipher.CIPHER_KEY: cipher_key}))

    @property
    def encrypted(self) -> bool:
        return self._cipher is not None

    def engine_directory(self, engine: str) -> Path:
        """The engine's directory (created 0700, parents too), for an engine that keeps
        every device in one place of its own."""
        path = self.root / engine
        try:
            _private_directory(path)
        except FileNotFoundError:  # the vault's first engine: its root first
            self.root.parent.mkdir(parents=True, exist_ok=True)
            _private_directory(self.root)
            _private_directory(path)
        return path

    def directory(self, engine: str, key: str, *, create: bool = True) -> Path:
        """The device's own directory (created 0700, parents too, unless `create` is false)."""
        path = self.root / engine / device_name(key)
        if create:
            try:
                _private_directory(path)
            except FileNotFoundError:  # the engine's first device: its parents first
                self.engine_directory(engine)
                _private_directory(path)
        return path

    def seal(self, data: bytes) -> bytes:
        """`data` as the vault stores it: AES-GCM encrypted when pairgate has a key."""
        return self._cipher.encrypt(data) if self._cipher else data

    def unseal(self, sealed: bytes) -> bytes:
        """What `seal` sealed; CredentialsUnreadableError if this key did not seal it."""
        if self._cipher is None:
            return sealed
        try:
            return self._cipher.decrypt(sealed)
        except ValueError as error:
            raise CredentialsUnreadableError(NOT_THIS_KEY) from error

    def holds(self, engine: str, key: str) -> bool:
        """Whether any credentials are stored for the device."""
        path = self.directory(engine, key, create=False)
        return path.is_dir() and any(path.iterdir())

    def write(self, engine: str, key: str, name: str, data: bytes, *, sync: bool = True) -> Path:
        """Store `data` as the file `name` (0600, atomically replaced, encrypted if keyed).

        `sync`: on disk before returning, so that it survives a power cut too (a process
        crash loses nothing either way: the written file is in the OS's cache).
        """
        path = self.directory(engine, key, create=False) / name
        try:
            _replace(path, self.seal(data), sync)
        except FileNotFoundError:  # the device's first file: make its directory first
            self.directory(engine, key)
            _replace(path, self.seal(data), sync)
        return path

    def read(self, engine: str, key: str, name: str) -> bytes | None:
        """The file's contents, or None when the device has no such file."""
        path = self.directory(engine, key, create=False) / name
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return self.unseal(sealed)
        except CredentialsUnreadableError as error:
            raise CredentialsUnreadableError(f"credentials in {path.parent} {error}") from error

    def remove(self, engine: str, key: str) -> None:
        """Delete the device's credentials, all of them (nothing to do if there are none)."""
        shutil.rmtree(self.directory(engine, key, create=False), ignore_errors=True)

    def rekey(self, resealer: Resealer, step: Callable[[], None] = lambda: None) -> int:
        """Seal every device's files with `resealer`'s new key (`pairgate rekey`): each one
        atomically replaced, so a file is sealed with one key or the other, never plain.
        The engines' own databases (`*.sqlite3*`) are not the vault's files. Returns how
        many files were resealed; `step` is called after each file."""
        resealed = 0
        devices = (d for engine in _directories(self.root) for d in _directories(engine))
        for device in devices:
            for path in sorted(device.iterdir()):
                if path.name.startswith(".") or ".sqlite3" in path.name or not path.is_file():
                    continue
                data = path.read_bytes()
                try:
                    sealed = resealer.reseal(data)
                except ResealError:
                    if data[:1] != b"{":  # plain JSON a keyless Baileys sidecar wrote
                        raise ResealError(f"{path} {NOT_THIS_KEY}") from None
                    sealed = resealer.new.encrypt(data)
                if sealed is not None:
                    _replace(path, sealed, sync=True)
                    resealed += 1
                step()
        return resealed


def _directories(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def _replace(path: Path, sealed: bytes, sync: bool) -> None:
    """`path` holds `sealed` (0600): written beside it, then renamed over it."""
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:  # the descriptor itself: a file object would add three system calls
        unwritten = memoryview(sealed)
        while unwritten:
            unwritten = unwritten[os.write(descriptor, unwritten) :]
        if sync:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(partial, path)


def device_name(key: str) -> str:
    """A device's name in the vault: its key's SHA-256, safe and fixed-length whatever
    string a client chose."""
    return hashlib.sha256(key.encode()).hexdigest()


def _private_directory(path: Path) -> None:
    """Make `path` a directory only its owner can use (0700), if it is not one already."""
    try:
        path.mkdir(mode=DIRECTORY_MODE)
    except FileExistsError:
        pass
    path.chmod(DIRECTORY_MODE)  # mkdir's mode is masked by the umask
