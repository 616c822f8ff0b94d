"""The real WhatsApp engines this machine can run (neonize if installed, Baileys if Node and
its sidecar are), and an install hint for each it cannot."""

from __future__ import annotations

import importlib.util
import shutil

from adapters.credentials import CredentialVault
from adapters.engines import baileys
from adapters.engines.catalog import Engines
from domain.application.ports import WhatsAppEngine
from entrypoints.settings import Settings, reveal


def installed_engines(settings: Settings, vault: CredentialVault) -> Engines:
    """The real WhatsApp engines this machine can run, and hints for those it cannot."""
    available: dict[str, WhatsAppEngine] = {}
    missing: dict[str, str] = {}
    if importlib.util.find_spec("neonize") is not None:
        from adapters.engines.neonize import NeonizeEngine  # neonize itself loads on first use

        neonize = NeonizeEngine(vault, database_url=reveal(settings.neonize_database_url))
        available["neonize"] = available["whatsmeow"] = neonize
    else:
        missing["neonize"] = missing["whatsmeow"] = (
            "install it with `pip install 'pairgate[neonize]'`"
        )
    if shutil.which("node") and baileys.sidecar_installed():
        available["baileys"] = baileys.BaileysEngine(vault)
    else:
        missing["baileys"] = baileys.INSTALL_HINT
    return Engines(available, missing)
