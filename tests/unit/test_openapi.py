"""The OpenAPI document: generated from the operation table and the models, committed,
valid OpenAPI 3.1, and describing exactly the routes the app mounts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from adapters import payloads
from adapters.http.models import ErrorReply
from adapters.http.openapi import OPERATIONS, document, render
from entrypoints.asgi import create_app
from entrypoints.cli import main
from entrypoints.settings import Settings
from tests.docs import doc_block
from tests.helpers import web_app

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_committed_document_is_what_the_generator_writes() -> None:
    committed = (DOCS / "openapi.json").read_text()
    assert committed == render(), "regenerate it: pairgate openapi > docs/openapi.json"


def test_the_cli_prints_the_same_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi"]) == 0
    assert capsys.readouterr().out == render()


def test_it_is_valid_openapi_3_1() -> None:
    validate(document())  # raises on any violation of the OpenAPI 3.1 schema
    assert document()["openapi"] == "3.1.0"


def test_every_reference_resolves() -> None:
    text = render()
    schemas = document()["components"]["schemas"]
    refs = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert refs and refs <= set(schemas), refs - set(schemas)


def test_the_app_mounts_exactly_the_described_api_routes(tmp_path: Path) -> None:
    app = create_app(Settings(simulate=True, data_dir=tmp_path / "data"))
    try:
        web = web_app(app)
        mounted = {
            (method, route.path)
            for route in web.routes
            if isinstance(route, Route)
            and route.path.startswith(
                ("/api/sessions", "/api/webhooks", "/api/dead-letters", "/api/stats")
            )
            for method in (route.methods or ()) - {"HEAD"}
        }
        unlisted = app.pairgate.session_index is None  # mounted with the sessions read model
    finally:
        app.pairgate.sessions.close()
    described = {
        (method.upper(), path) for path, item in document()["paths"].items() for method in item
    }
    assert described == {(op.method, op.path) for op in OPERATIONS}
    assert mounted == described - (
        {("GET", "/api/sessions"), ("GET", "/api/stats")} if unlisted else set()
    )


def test_request_schemas_are_the_socketio_payloads() -> None:
    schemas = document()["components"]["schemas"]
    create = schemas["CreateRequest"]
    assert create["required"] == ["key", "name", "engine"]
    assert create["properties"]["key"]["pattern"] == payloads.KEY_PATTERN
    refusal = schemas["Refusal"]["properties"]["code"]
    assert set(payloads.ERROR_CODES) < set(refusal["enum"])
    qr = document()["paths"]["/api/sessions/{key}/qr"]["get"]["responses"]["200"]["content"]
    assert list(qr) == ["image/png", "application/json"]
    served = json.loads(render())
    assert served == document()


def test_the_documented_refusal_is_the_error_model() -> None:
    refusal = ErrorReply.model_validate_json(doc_block("rest-refusal"))
    assert refusal.error.code == "not_found"
