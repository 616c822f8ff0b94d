"""The AsyncAPI document: generated from the payload models, committed, and complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from adapters import payloads
from adapters.socketio.asyncapi import document, render
from entrypoints.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_committed_document_is_what_the_generator_writes() -> None:
    committed = (DOCS / "asyncapi.yaml").read_text()
    assert committed == render(), "regenerate it: pairgate asyncapi > docs/asyncapi.yaml"


def test_the_cli_prints_the_same_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asyncapi"]) == 0
    assert capsys.readouterr().out == render()


def test_every_event_in_the_protocol_tables_is_described() -> None:
    table_rows = [
        line for line in (DOCS / "protocol.md").read_text().splitlines() if line.startswith("|")
    ]
    events = {name for row in table_rows for name in re.findall(r"`(session\.[a-z_]+)`", row)}
    assert {"session.create", "session.qr", "session.disconnected"} <= events
    spec = document()
    messages = spec["components"]["messages"]
    assert events <= set(messages), events - set(messages)
    for event in events:
        assert event in spec["operations"]
        assert spec["channels"]["root"]["messages"][event]


def test_error_codes_in_the_protocol_table_are_the_schema_s() -> None:
    text = (DOCS / "protocol.md").read_text()
    table_codes = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.M))
    schema = document()["components"]["schemas"]["SessionError"]["properties"]["code"]
    assert table_codes == set(schema["enum"]) == set(payloads.ERROR_CODES)


def test_the_protocol_s_key_rule_is_the_server_s() -> None:
    text = (DOCS / "protocol.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `invalid_key` |"))
    assert f"`{payloads.KEY_PATTERN}`" in row, "docs/protocol.md quotes another key pattern"


def test_schemas_are_the_models_the_gateway_validates_with() -> None:
    schemas = yaml.safe_load(render())["components"]["schemas"]
    create = schemas["CreateRequest"]
    assert create["required"] == ["key", "name", "engine"]
    assert create["properties"]["key"]["pattern"] == payloads.KEY_PATTERN
    assert schemas["SessionDisconnected"]["properties"]["reason"]["enum"] == [
        "user logged out",
        "qr expired",
        "connection lost",
        "session revoked",
    ]
    # Every $ref points at a schema or message that exists.
    text = render()
    for ref in re.findall(r"\$ref: '#/components/(schemas|messages)/([^']+)'", text):
        assert ref[1] in yaml.safe_load(text)["components"][ref[0]]
