"""The Scan-QR page takes what it knows of the protocol from the server, not a copy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import adapters
from adapters.http.scan_page import REASON_TEXTS, browser_pattern, scan_page
from adapters.payloads import KEY_PATTERN
from domain.model.session import DisconnectReason, SessionState

KEYS = ["device123", "a", "A.b-c_d", "x" * 64, "x" * 65, ".", "..", "...", ".a", "a b", "é", ""]


def test_every_reason_is_explained_in_every_language() -> None:
    for texts in REASON_TEXTS.values():
        assert set(texts) == set(DisconnectReason)


@pytest.mark.parametrize("key", KEYS)
def test_the_pages_pattern_accepts_the_keys_the_server_accepts(key: str) -> None:
    # What a browser does with it: anchor it; here `\-` and `-` mean the same.
    anchored = re.compile(f"^(?:{browser_pattern(KEY_PATTERN)})$")
    assert bool(anchored.match(key)) is bool(re.match(KEY_PATTERN, key))


def test_the_page_carries_the_pattern_and_the_reasons() -> None:
    page = scan_page()
    assert f'pattern="{browser_pattern(KEY_PATTERN)}"' in page
    data = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', page)
    assert data is not None and "{{" not in page
    served = json.loads(data.group(1))
    assert set(served["reasons"]["en"]) == {reason.value for reason in DisconnectReason}
    assert served["linkedReasons"] == ["connection lost"]


def test_every_state_has_words_in_every_language_of_the_page() -> None:
    # scan.js keys its state texts by the protocol's state names: a state added to the
    # model (or renamed) must get its words in each language.
    script = (Path(adapters.__file__).parent / "static" / "scan.js").read_text()
    blocks = re.findall(r"\n      state: \{\n(.*?)\n      \},", script, flags=re.S)
    assert len(blocks) == 2  # English and Indonesian
    for block in blocks:
        named = set(re.findall(r"^        ([a-z]+):", block, flags=re.M))
        assert {state.value for state in SessionState} <= named
