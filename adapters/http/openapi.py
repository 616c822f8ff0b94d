"""The OpenAPI 3.1 document of the HTTP API, generated from the operation table the router
mounts (adapters.http.rest.Operation) and the pydantic models requests are validated with,
so the three cannot drift apart. Served at /openapi.json; `pairgate openapi >
docs/openapi.json` writes it, and a test checks the committed file is what this writes.
"""

from __future__ import annotations

import functools
import json
import sys
from http import HTTPStatus
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters import payloads
from adapters.engines.catalog import KNOWN_ENGINES
from adapters.http import api, console_api, qr_api, sessions_api, webhooks_api
from adapters.http.models import ErrorReply
from adapters.http.rest import JSON, Operation

REF = "#/components/schemas/{model}"
OPERATIONS: list[Operation] = [
    *sessions_api.OPERATIONS,
    *api.OPERATIONS,
    *qr_api.OPERATIONS,
    *webhooks_api.OPERATIONS,
    *console_api.OPERATIONS,
]
EVERY_REFUSAL = (400, 401, 429)  # a bad request, no or a bad token, too many requests
CHANGES_REFUSAL = (403,)  # a cross-site request from a browser (adapters.http.guards)
PATH_PARAMETERS: dict[str, type[payloads.Request]] = {
    "key": payloads.KeyRequest,
    "id": webhooks_api.WebhookId,
}


@functools.cache
def document() -> dict[str, Any]:
    queries = {op.query for op in OPERATIONS if op.query is not None}
    inputs = {op.body for op in OPERATIONS if op.body is not None} | queries
    inputs |= set(PATH_PARAMETERS.values())
    models = inputs | {model for op in OPERATIONS for model in op.responses.values()}
    ordered = sorted(models | {ErrorReply}, key=lambda model: model.__name__)
    _, defs = models_json_schema(
        [(model, "validation" if model in inputs else "serialization") for model in ordered],
        ref_template=REF,
    )
    schemas = dict(sorted(defs.get("$defs", {}).items()))
    # The names a server may know (whether it runs them is its own: engine_unavailable).
    schemas["CreateRequest"]["properties"]["engine"]["enum"] = list(KNOWN_ENGINES)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    for model in queries | set(PATH_PARAMETERS.values()):
        schemas.pop(model.__name__, None)  # described as parameters, not bodies
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pairgate HTTP API",
            "version": "0.1.0",
            "description": (
                "Create, read and end WhatsApp device sessions over REST: the same service, "
                "identities, rate limits and error shape as the Socket.IO protocol "
                "(docs/asyncapi.yaml). Without PAIRGATE_TOKENS no token is needed. "
                "Generated from adapters/http: see docs/integrations.md for the prose."
            ),
        },
        "servers": [{"url": "http://127.0.0.1:8000", "description": "pairgate serve"}],
        "security": [{"bearer": []}, {}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of PAIRGATE_TOKENS (identity:token pairs)",
                }
            },
        },
    }


def _operation(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    described: dict[str, Any] = {"operationId": op.name, "summary": op.summary}
    parameters = [
        _parameter(name, "path", schemas[model.__name__]["properties"][name], required=True)
        for name, model in PATH_PARAMETERS.items()
        if "{" + name + "}" in op.path
    ]
    if op.query is not None:
        properties = schemas[op.query.__name__]["properties"]
        parameters += [
            _parameter(name, "query", schema)
            for name, schema in properties.items()
            if name not in PATH_PARAMETERS
        ]
    if parameters:
        described["parameters"] = parameters
    if op.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": {"$ref": REF.format(model=op.body.__name__)}}},
        }
    responses: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        content = {JSON: {"schema": {"$ref": REF.format(model=model.__name__)}}}
        if status in op.media:
            content = {op.media[status]: {"schema": {"type": "string"}}, **content}
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": content}
    refusals = {*EVERY_REFUSAL, *op.refusals}
    if op.method not in ("GET", "HEAD"):
        refusals |= {*CHANGES_REFUSAL}
    error = {JSON: {"schema": {"$ref": REF.format(model=ErrorReply.__name__)}}}
    for status in sorted(refusals):
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": error}
    described["responses"] = responses
    return described


def _parameter(name: str, where: str, schema: dict[str, Any], *, required: bool = False) -> Any:
    schema = dict(schema)
    description = schema.pop("description", None)
    schema.pop("title", None)
    if not required and "anyOf" in schema:  # optional: absent, rather than null
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null") | {
            k: v for k, v in schema.items() if k != "anyOf" and k != "default"
        }
    described = {"name": name, "in": where, "required": required, "schema": schema}
    return described | ({"description": description} if description else {})


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def openapi_routes() -> list[Route]:
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(document())

    return [Route("/openapi.json", openapi)]


if __name__ == "__main__":
    sys.stdout.write(render())
