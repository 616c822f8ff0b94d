"""QR codes as PNG data URIs (segno), sized to be scanned from a screen."""

from __future__ import annotations

import functools

import segno

# 6 px per module with the standard 4-module quiet zone: a WhatsApp code (version 9-10)
# becomes a ~350 px image, comfortable for a phone camera and for standard decoders.
SCALE = 6
BORDER = 4


@functools.lru_cache(maxsize=2048)
def qr_data_uri(text: str) -> str:
    """Render `text` once; rejoining clients get the cached image of the same code."""
    code = segno.make(text, error="L", micro=False)
    return code.png_data_uri(scale=SCALE, border=BORDER)
