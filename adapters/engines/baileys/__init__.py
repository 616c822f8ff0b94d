"""The Baileys engine: WhatsApp Web through Baileys in a Node.js sidecar process.

Baileys' libsignal is GPL-3.0; it runs in its own process (`sidecar/index.mjs`), which
pairgate drives over newline-delimited JSON and never links into its own code.
"""

from __future__ import annotations

from adapters.engines.baileys.engine import BaileysEngine
from adapters.engines.baileys.sidecar import SIDECAR_DIR

INSTALL_HINT = (
    "the Baileys engine needs Node.js 20+ and its packages: "
    "`npm ci --prefix adapters/engines/baileys/sidecar`"
)


def sidecar_installed() -> bool:
    """Whether the sidecar's npm packages are installed (`npm ci` has run)."""
    return (SIDECAR_DIR / "node_modules" / "@whiskeysockets" / "baileys").is_dir()


__all__ = ["INSTALL_HINT", "SIDECAR_DIR", "BaileysEngine", "sidecar_installed"]
