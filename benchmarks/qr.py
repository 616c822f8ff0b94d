"""QR renderers compared on WhatsApp-shaped codes (217 characters, version 9): ms per code.

    python -m benchmarks.qr --codes 300 --json qr.json

Every renderer gets fresh codes (no cache). `pairgate` is adapters/qr_png as shipped.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import segno
import zxingcpp

from adapters.engines.simulator import whatsapp_shaped_code
from adapters.qr import png as qr_png
from benchmarks.common import emit


def zxing_png(text: str) -> str:
    """zxing-cpp's encoder (its own mask choice and padding), through pairgate's PNG writer."""
    barcode = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="L")
    image = memoryview(barcode.to_image(scale=1, add_quiet_zones=False))
    width = image.shape[0]
    modules = bytes(1 if value == 0 else 0 for value in image.tobytes())
    return qr_png.png(width, modules).hex()


RENDERERS: dict[str, Callable[[str], Any]] = {
    "segno.make (mask search)": lambda t: segno.make(t, error="L", micro=False),
    "segno.make (fixed mask)": lambda t: segno.make(t, error="L", micro=False, mask=qr_png.MASK),
    "segno default + PNG (pairgate before)": lambda t: segno.make(
        t, error="L", micro=False
    ).png_data_uri(scale=qr_png.SCALE, border=qr_png.BORDER),
    "zxing-cpp create_barcode": lambda t: zxingcpp.create_barcode(
        t, zxingcpp.BarcodeFormat.QRCode, ec_level="L"
    ),
    "zxing-cpp + PNG writer": zxing_png,
    "pairgate modules (qr_modules)": qr_png.qr_modules,
    "pairgate PNG data URI (qr_data_uri)": qr_png.qr_data_uri.__wrapped__,
}


def per_code_ms(render: Callable[[str], Any], codes: list[str]) -> float:
    render(codes[0])  # warm: imports, cached layouts
    started = time.perf_counter()
    for code in codes:
        render(code)
    return round((time.perf_counter() - started) / len(codes) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    codes = [whatsapp_shaped_code() for _ in range(args.codes)]
    symbol = segno.make(codes[0], error="L", micro=False)

    def segno_png_only(text: str) -> str:
        return str(symbol.png_data_uri(scale=qr_png.SCALE, border=qr_png.BORDER))

    renderers = {**RENDERERS, "segno PNG data URI only, scale 6": segno_png_only}
    results = {name: per_code_ms(render, codes) for name, render in renderers.items()}
    emit({"benchmark": "qr", "codes": args.codes, "ms_per_code": results}, args.json)


if __name__ == "__main__":
    main()
