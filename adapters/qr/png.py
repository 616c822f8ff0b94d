"""QR codes as PNG data URIs, sized to be scanned from a screen, in well under a millisecond.

segno spends ~7 of its ~9 ms per WhatsApp-sized code choosing the data mask and most of the
rest in pure-Python loops over single bits. Here the mask is fixed (`MASK`), and for the
byte-mode texts engines send (WhatsApp's `2@...,...` codes) the symbol is assembled from a
cached layout per (version, error level): a template (function patterns, format and version
information, and the mask over an all-zero message) XORed with the message bits placed by
one C-level gather. The modules are exactly segno's `segno.make(text, error="L",
micro=False, mask=MASK)` (tests/unit/test_qr_png.py checks this); other texts go through
segno itself. docs/performance.md has the numbers.
"""

from __future__ import annotations

import base64
import functools
import operator
import struct
import zlib
from collections.abc import Callable
from typing import Any

import segno
from segno import consts as segno_consts
from segno import encoder as segno_encoder

# segno's encoder internals (tables and the symbol-building steps) carry no type hints.
consts: Any = segno_consts
encoder: Any = segno_encoder

# 6 px per module with the standard 4-module quiet zone: a WhatsApp code (version 9-10)
# becomes a ~370 px image, comfortable for a phone camera and for standard decoders.
SCALE = 6
BORDER = 4
# Level 1: a quarter of level 6's time (21 vs 77 µs for a version-9 code), 150 bytes more
# (1,050 vs 901): the rows are so repetitive that effort buys little.
ZLIB_LEVEL = 1
# Any mask decodes; 2 has the lowest mean ISO 18004 penalty over random WhatsApp codes
# (2628 vs 2707-2962 for the others) and is the one segno itself picks most often for them.
MASK = 2

_ERROR_BOOST = (consts.ERROR_LEVEL_M, consts.ERROR_LEVEL_Q, consts.ERROR_LEVEL_H)
_PAD = b"\xec\x11" * 1500
# One byte per bit, most significant first: the message as module values.
_BITS = [bytes((byte >> shift) & 1 for shift in range(7, -1, -1)) for byte in range(256)]


@functools.lru_cache(maxsize=128)
def qr_data_uri(text: str) -> str:
    """Render `text` once; clients rejoining soon after get the cached image of the code.

    A small cache: a code is shown for 20 to 60 s, then its image is dead weight (2,048
    images were 2.7 MB, 1.4 KB per session of 2,000 idle ones)."""
    width, modules = qr_modules(text)
    return "data:image/png;base64," + base64.b64encode(png(width, modules)).decode("ascii")


def qr_modules(text: str) -> tuple[int, bytes]:
    """The symbol's width and its modules row by row, one byte each (1 = dark)."""
    data = text.encode("ascii", "ignore")
    if len(data) != len(text) or not data.translate(None, consts.ALPHANUMERIC_CHARS):
        # Not plain bytes (segno picks another mode or encoding): let segno do it.
        code = segno.make(text, error="L", micro=False, mask=MASK)
        return len(code.matrix), b"".join(bytes(row) for row in code.matrix)
    version, error = _version_and_error(len(data))
    layout = _layout(version, error)
    return layout.width, layout.render(_codewords(data, version, error))


def _message_bits(version: int, length: int) -> int:
    count_bits: int = consts.CHAR_COUNT_INDICATOR_LENGTH[consts.MODE_BYTE][
        encoder.version_range(version)
    ]
    return 4 + count_bits + 8 * length


def _version_and_error(length: int) -> tuple[int, int]:
    """segno's choice: the smallest version at level L, then the highest level it still fits."""
    for version in range(1, 41):
        needed = _message_bits(version, length)
        if consts.SYMBOL_CAPACITY[version][consts.ERROR_LEVEL_L] >= needed:
            error = consts.ERROR_LEVEL_L
            for better in _ERROR_BOOST:
                if consts.SYMBOL_CAPACITY[version][better] < needed:
                    break
                error = better
            return version, error
    raise ValueError("text too long for a QR code")


def _codewords(data: bytes, version: int, error: int) -> bytes:
    """Data codewords, interleaved, then error correction codewords, interleaved."""
    capacity = consts.SYMBOL_CAPACITY[version][error]
    bits = _message_bits(version, len(data))
    count_bits = bits - 4 - 8 * len(data)
    value = (((consts.MODE_BYTE << count_bits) | len(data)) << 8 * len(data)) | int.from_bytes(data)
    terminator = min(capacity - bits, 4)
    value <<= terminator
    bits += terminator
    # segno pads with 8 - bits % 8 zero bits: a whole zero byte when already aligned.
    value <<= 8 - bits % 8
    bits += 8 - bits % 8
    stream = value.to_bytes(bits // 8) + _PAD[: max(0, capacity // 8 - bits // 8)]
    blocks, ec_blocks, at = [], [], 0
    for info in consts.ECC[version][error]:
        rows = _rs_rows(info.num_total - info.num_data)
        size = info.num_total - info.num_data
        top, keep = 8 * (size - 1), (1 << 8 * size) - 1
        for _ in range(info.num_blocks):
            block = stream[at : at + info.num_data]
            at += info.num_data
            remainder = 0
            for byte in block:
                remainder = ((remainder << 8) & keep) ^ rows[byte ^ (remainder >> top)]
            blocks.append(block)
            ec_blocks.append(remainder.to_bytes(size))
    return _interleave(blocks) + _interleave(ec_blocks)


def _interleave(blocks: list[bytes]) -> bytes:
    count, shortest = len(blocks), len(blocks[0])
    out = bytearray(count * shortest)
    for index, block in enumerate(blocks):
        out[index::count] = block[:shortest]
    return bytes(out) + bytes(block[shortest] for block in blocks if len(block) > shortest)


@functools.cache
def _rs_rows(size: int) -> list[int]:
    """The generator polynomial times each byte value, as `size`-byte integers."""
    log, exp, generator = consts.GALIOS_LOG, consts.GALIOS_EXP, consts.GEN_POLY[size]
    rows = [0]
    for coefficient in range(1, 256):
        rows.append(int.from_bytes(bytes(exp[log[coefficient] + g] for g in generator)))
    return rows


class _Layout:
    """One (version, error level) at mask `MASK`: where each message bit goes, and the rest."""

    def __init__(self, version: int, error: int) -> None:
        width = encoder.calc_matrix_size(version)
        matrix = encoder.make_matrix(width, width)
        encoder.add_finder_patterns(matrix, width, width)
        encoder.add_alignment_patterns(matrix, width, width)
        placed = _placement(matrix, width)
        slots = len(placed)
        encoder.add_codewords(matrix, bytes(slots), version)
        _, matrix = encoder.find_and_apply_best_mask(matrix, width, width, MASK)
        encoder.add_format_info(matrix, version, error, MASK)
        encoder.add_version_info(matrix, version)
        self.width = width
        self.template = int.from_bytes(b"".join(bytes(row) for row in matrix))
        # Every cell gathers one message bit; cells outside the data region gather a zero.
        source = [slots] * (width * width)
        for bit, cell in enumerate(placed):
            source[cell] = bit
        self.slots = slots
        self.gather: Callable[[bytes], tuple[int, ...]] = operator.itemgetter(*source)

    def render(self, codewords: bytes) -> bytes:
        bits = b"".join(map(_BITS.__getitem__, codewords)).ljust(self.slots + 1, b"\0")
        placed = int.from_bytes(bytes(self.gather(bits)))
        return (self.template ^ placed).to_bytes(self.width * self.width)


@functools.cache
def _layout(version: int, error: int) -> _Layout:
    return _Layout(version, error)


def _placement(matrix: tuple[bytearray, ...], width: int) -> list[int]:
    """Cells of the encoding region in placement order (segno's `add_codewords` walk)."""
    cells = []
    for right in range(width - 1, 0, -2):
        if right <= 6:
            right -= 1
        for vertical in range(width):
            for z in range(2):
                column = right - z
                upwards = ((right & 2) == 0) ^ (column < 6)
                row = (width - 1 - vertical) if upwards else vertical
                if matrix[row][column] == 0x2:
                    cells.append(row * width + column)
    return cells


def png(width: int, modules: bytes, scale: int = SCALE, border: int = BORDER) -> bytes:
    """A 1-bit greyscale PNG (dark modules black), repeated rows as PNG "Up" filter lines.

    Every module row, quiet zone included and padded to whole bytes, becomes bits in one
    integer conversion; each byte of eight modules then becomes `scale` bytes of pixels by
    one table lookup."""
    size = (width + 2 * border) * scale
    row_bytes = (size + 7) // 8
    span = width + 2 * border
    padded = -(-span // 8) * 8  # modules per row, rounded up to whole bytes
    quiet = b"1" * border
    light = modules.translate(_LIGHT)
    between = quiet + b"1" * (padded - span) + quiet  # one row's end, the next one's start
    rows = between.join(light[y * width : (y + 1) * width] for y in range(width))
    packed = int(quiet + rows + between[border:], 2).to_bytes(width * padded // 8)
    pixels = b"".join(map(_spread(scale).__getitem__, packed))
    stride = padded * scale // 8
    same_as_above = b"\2" + bytes(row_bytes)
    repeat = same_as_above * (scale - 1)
    blank = b"\0" + b"\xff" * row_bytes + same_as_above * (border * scale - 1)
    lines = [b"\0" + pixels[at : at + row_bytes] + repeat for at in range(0, len(pixels), stride)]
    raw = blank + b"".join(lines) + blank
    header = struct.pack(">2I5B", size, size, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + (_chunk(b"IDAT", zlib.compress(raw, ZLIB_LEVEL)) + _chunk(b"IEND", b""))
    )


# Module values as the text of their pixels' bits: light (0) is 1, dark (1) is 0.
_LIGHT = bytes.maketrans(b"\0\1", b"10")


@functools.cache
def _spread(scale: int) -> list[bytes]:
    """For each byte of eight module bits, its `scale` bytes of pixel bits."""
    return [
        int("".join(bit * scale for bit in f"{byte:08b}"), 2).to_bytes(scale) for byte in range(256)
    ]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
