"""Every block of README.md and docs/*.md is run by a test or marked illustrative; the
small ones that need no server are checked here."""

from __future__ import annotations

import json
import logging
import re

from adapters import payloads
from adapters.socketio.asyncapi import Accepted, Refused
from entrypoints.logs import JsonFormatter
from tests.docs import ROOT, blocks, doc_block


def test_every_block_is_tested_or_marked_illustrative() -> None:
    unmarked = [b.where for b in blocks() if b.marker is None]
    assert not unmarked, (
        f"mark each <!-- doc-test: NAME --> or <!-- illustrative: why -->: {unmarked}"
    )


def test_every_doc_test_is_run_by_a_test() -> None:
    names = [b.label for b in blocks() if b.marker == "doc-test"]
    assert len(names) == len(set(names)), names
    sources = "".join(
        path.read_text() for path in (ROOT / "tests").rglob("*.py") if path.name != "docs.py"
    )
    run = set(re.findall(r'doc_block\(\s*"([^"]+)"\s*\)', sources))
    assert set(names) - run == set(), "doc-test blocks no test runs"
    assert run - set(names) == set(), "tests ask for blocks the docs no longer mark"


def test_the_json_log_line_is_what_the_formatter_writes() -> None:
    documented = json.loads(doc_block("json-log-line"))
    record = logging.LogRecord(
        documented["logger"], logging.WARNING, __file__, 1, documented["message"], None, None
    )
    record.key = documented["key"]
    written = json.loads(JsonFormatter().format(record))
    assert list(written) == list(documented)
    assert {k: v for k, v in written.items() if k != "time"} == {
        k: v for k, v in documented.items() if k != "time"
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", documented["time"])


def test_the_protocol_examples_are_the_models_payloads() -> None:
    payloads.CreateRequest.model_validate(json.loads(doc_block("relink-request")))
    Refused.model_validate(json.loads(doc_block("relink-refusal")))
    Accepted.model_validate(json.loads(doc_block("ack")))
    payloads.SessionError.model_validate(json.loads(doc_block("session-error")))
