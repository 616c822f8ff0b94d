"""The HTTP API fuzzed from its own OpenAPI document (schemathesis) against a real server:
no server errors, and every response matches the document (status, media type, body)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import allow_header_conformance, positive_data_acceptance

from adapters.http.openapi import document
from entrypoints.settings import Settings
from tests.helpers import ThreadedServer, running_in_thread

TOKEN = "fuzzer-token-0123456789"
EXAMPLES = 60  # per operation: the suite's run stays well under a minute
schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    data_dir: Path = tmp_path_factory.mktemp("openapi") / "data"
    config = Settings(
        simulate=True,
        data_dir=data_dir,
        tokens=SecretStr(f"fuzzer:{TOKEN}"),
        rate_limit_http="",
        rate_limit_history="",
        max_unpaired_per_identity=0,
    )
    with running_in_thread(config) as threaded:
        yield threaded


class Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def tracebacks() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


# The server, in its own thread, uses the `random` module while hypothesis draws examples.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@schema.parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
def test_every_answer_is_described_and_none_is_a_server_error(
    case: schemathesis.Case, target: ThreadedServer, tracebacks: Tracebacks
) -> None:
    excluded = []
    if target.server.pairgate.session_index is None and case.path == "/api/sessions":
        if case.method == "GET":
            pytest.skip("GET /api/sessions needs the sessions read model (branch hooks21)")
        excluded.append(allow_header_conformance)  # its Allow lacks GET until then
    # A version past the session's last (`at`, a history's `after`) is schema-valid and
    # still refused (400): which versions exist is the session's, not the document's.
    if case.path_parameters is not None and {"at", "after"} & set(case.query or {}):
        excluded.append(positive_data_acceptance)
    # A webhook URL that fits the schema is still refused (400) when its host resolves to
    # no address webhooks may call: the network's to say, not the document's.
    if (case.method, case.path) == ("POST", "/api/webhooks"):
        excluded.append(positive_data_acceptance)
    # So is a pairing's proxy whose host resolves to no address a proxy may be at
    # (PAIRGATE_PROXY_ALLOWED_NETWORKS; docs/security.md, threat 25).
    if isinstance(case.body, dict) and case.body.get("proxy") is not None:
        excluded.append(positive_data_acceptance)
    case.call_and_validate(
        base_url=target.server.url,
        headers={"authorization": f"Bearer {TOKEN}"},
        excluded_checks=excluded,
        timeout=10,
    )
    assert [record.getMessage() for record in tracebacks.records] == []
