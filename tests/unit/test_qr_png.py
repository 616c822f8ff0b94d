"""adapters/qr_png: segno's symbol at a fixed mask, as a PNG a standard decoder reads."""

from __future__ import annotations

import base64
import io
import random
import string

import pytest
import segno
from PIL import Image

from adapters.engines.simulator import whatsapp_shaped_code
from adapters.qr.png import BORDER, MASK, SCALE, qr_data_uri, qr_modules
from tests.helpers import decode_qr

ALPHABET = string.ascii_letters + string.digits + "+/=,@:.-_ "


def segno_modules(text: str) -> bytes:
    code = segno.make(text, error="L", micro=False, mask=MASK)
    return b"".join(bytes(row) for row in code.matrix)


def pixels(data_uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))).convert("L")


def test_a_whatsapp_code_decodes_to_its_text() -> None:
    code = whatsapp_shaped_code()
    assert decode_qr(qr_data_uri(code)) == code


def test_the_image_is_segnos_image_pixel_for_pixel() -> None:
    code = whatsapp_shaped_code()
    ours = pixels(qr_data_uri(code))
    reference = segno.make(code, error="L", micro=False, mask=MASK)
    theirs = pixels(reference.png_data_uri(scale=SCALE, border=BORDER))
    assert ours.size == theirs.size
    assert ours.tobytes() == theirs.tobytes()


def test_modules_equal_segnos_for_every_version_and_error_boost() -> None:
    # Lengths from 1 to 2,900 bytes cover versions 1-40, the 8- and 16-bit count fields,
    # the boosted error levels and an already byte-aligned terminator.
    rnd = random.Random(7)
    lengths = [*range(1, 80), *rnd.sample(range(80, 2900), 60), 2953]
    for length in lengths:
        text = "".join(rnd.choice(ALPHABET) for _ in range(length))
        width, modules = qr_modules(text)
        assert modules == segno_modules(text), length
        assert len(modules) == width * width


@pytest.mark.parametrize("text", ["HELLO WORLD 42", "0123456789", "grüße", "日本語"])
def test_texts_outside_plain_bytes_go_through_segno(text: str) -> None:
    assert qr_modules(text)[1] == segno_modules(text)
    assert decode_qr(qr_data_uri(text)) == text


def test_too_long_a_text_is_refused() -> None:
    with pytest.raises(ValueError):
        qr_modules("x" * 3000)
