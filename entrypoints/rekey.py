"""`pairgate rekey`: seal everything pairgate encrypts with a new PAIRGATE_CIPHER_KEY.

The old key is PAIRGATE_CIPHER_KEY as the service has it (unset: the store and the vault
are plain and get encrypted); the new one is read from standard input (a command line is
visible to every local user). In order: the marker (the store refuses to open until the
rekey has finished; in a PostgreSQL store itself, so that every process using it
refuses), the vault's files (the Baileys sidecar's auth state, neonize's device ids),
the simulator's rows, the events and snapshots, the read models; then the marker goes.
Each value is sealed with the new key in a write of its own (files replaced
atomically, rows a batch per transaction), so nothing is ever stored in plain text, and
whatever the new key already sealed is skipped: a run killed half-way is run again, with
the same keys, to finish. It is refused while a `pairgate serve` uses the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TextIO

from adapters.credentials import CredentialVault
from adapters.engines import simulated_keys
from adapters.resealing import Resealer, ResealError, aes, fingerprint
from adapters.store import rekey as store_rekey
from adapters.store import rekey_marker
from adapters.store.config import StoreConfig, StoreUnreadableError, open_store, reach_postgres
from adapters.store.in_use import SqliteLock, StoreInUseError, refuse_while_served
from entrypoints.settings import SettingError, Settings


def read_new_key(stdin: TextIO) -> str:
    """The new key: a line of standard input (typed without echo on a terminal)."""
    if stdin.isatty():
        import getpass

        new_key = getpass.getpass("new PAIRGATE_CIPHER_KEY: ").strip()
    else:
        new_key = stdin.readline().strip()
    try:
        aes(new_key)
    except (ValueError, OSError):
        raise SettingError(
            "new cipher key",
            "give it on standard input, 16, 24 or 32 bytes in base64 "
            "(`pairgate keygen` prints one)",
        ) from None
    return new_key


def rekey(
    settings: Settings, new_key: str, out: TextIO, step: Callable[[], None] = lambda: None
) -> int:
    """`step` runs after each value (tests stop a run half-way with it)."""
    old_key = settings.cipher
    if fingerprint(old_key) == fingerprint(new_key):
        raise SettingError("new cipher key", "is PAIRGATE_CIPHER_KEY already: nothing to do")
    config = settings.store_config()
    lock = None
    if config.kind == "postgres":
        reach_postgres(config)
        refuse_while_served(config, "a rekey")
    elif config.data_dir.exists():
        (lock := SqliteLock(config.data_dir)).acquire("rekeying")  # or StoreInUseError
    try:
        return _rekey(settings, config, new_key, out, step)
    finally:
        if lock is not None:
            lock.release()


def _rekey(
    settings: Settings,
    config: StoreConfig,
    new_key: str,
    out: TextIO,
    step: Callable[[], None],
) -> int:
    old_key = settings.cipher
    fresh = rekey_marker.under_way(config) is None
    if fresh and (config.kind != "sqlite" or config.sqlite_path.exists()):
        try:
            open_store(config, create=False).close()  # the old key opens the events: go on
        except StoreUnreadableError as unreadable:
            # A run on another machine may have sealed the shared store already: this
            # machine's vault still has the old key's files.
            try:
                open_store(dataclasses.replace(config, cipher_key=new_key), create=False).close()
            except StoreUnreadableError:
                raise unreadable from None
            out.write("the store is sealed with the new key already: ")
            out.write("sealing this machine's files\n")
    if not rekey_marker.begin(config, old_key, new_key):
        out.write("finishing an interrupted rekey\n")
    elif config.kind == "postgres":
        # A process that started since the check above: it sees the marker from now on.
        try:
            refuse_while_served(config, "a rekey")
        except StoreInUseError:
            rekey_marker.finish(config)
            raise
    resealer = Resealer(old_key, new_key)
    vault = CredentialVault(settings.credentials_path)
    try:
        counts = {
            "vault files": vault.rekey(resealer, step),
            "simulator rows": simulated_keys.rekey(vault, resealer, step),
        }
        store = store_rekey.StoreRekey(config, resealer, old_key, new_key)
        counts["events and snapshots"] = store.events(step)
        counts["read model rows"] = store.read_models(step)
    except ResealError as error:
        raise SettingError("PAIRGATE_CIPHER_KEY", f"a stored value {error}") from None
    rekey_marker.finish(config)
    for what, count in counts.items():
        out.write(f"{what}: {count} sealed with the new key\n")
    out.write("done: set PAIRGATE_CIPHER_KEY to the new key before starting pairgate\n")
    return 0
