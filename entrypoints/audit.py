"""`pairgate history` and `pairgate export`: the event store read directly, no server."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from entrypoints.settings import Settings


def run_audit(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """`history` and `export` read the event store directly; no server needs to run."""
    from adapters.store.config import open_store
    from domain.application.history import export_records, history_page
    from domain.model.errors import DeviceSessionError

    # Reading must not create: an empty store where none was would read as lost data.
    sessions = open_store(settings.store_config(), create=False)
    try:
        if args.command == "export":
            for record in export_records(sessions, args.since):
                out.write(json.dumps(record) + "\n")
            return 0
        page = history_page(sessions, args.key, after=args.after, limit=args.limit, at=args.at)
    except DeviceSessionError as refused:
        print(f"pairgate: {refused.message}", file=sys.stderr)
        return 1
    finally:
        sessions.close()
    if args.json:
        reply = {"key": args.key, "events": page.events, "next": page.next}
        out.write(json.dumps(reply, indent=2) + "\n")
        return 0
    out.write(table(page.events))
    if page.next is not None:
        print(f"pairgate: more events follow: --after {page.next}", file=sys.stderr)
    return 0


def table(records: list[dict[str, Any]]) -> str:
    """Stored values (a device's name is whatever its client sent) are shown `shown`:
    none can break a row, forge a column or turn the terminal's text around."""
    header = ("VERSION", "TIMESTAMP (UTC)", "TYPE", "STATE", "DETAILS")
    rows = [header] + [
        (
            shown(r["version"]),
            shown(r["timestamp"][:23].replace("T", " "), plain=" "),
            shown(r["type"]),
            shown(r["state"]),
            "  ".join(f"{k}={shown(v)}" for k, v in list(r.items())[4:]),
        )
        for r in records
    ]
    # Every column padded but the last, which runs to the end of its line.
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "".join(
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        + "\n"
        for row in rows
    )


# Characters a bare value may not contain: they would end it or make it two.
_SEPARATORS = frozenset("'\"\\=")


def shown(value: Any, plain: str = "") -> str:
    """A value as one unmistakable cell: bare when it is a plain word (`plain` lists
    blanks it may contain), else a Python literal, quoted, with escapes for what is not
    printable (str.isprintable: control, format and bidi characters, line and paragraph
    separators, spaces other than " ")."""
    text = str(value)
    bare = bool(text) and text.isprintable() and not _SEPARATORS.intersection(text)
    if bare and not any(c.isspace() and c not in plain for c in text):
        return text
    return repr(text)
