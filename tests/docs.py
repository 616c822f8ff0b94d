"""The fenced blocks of README.md and docs/*.md, so that tests run them as written.

Every block is marked, on the line right before its opening fence, either
`<!-- doc-test: NAME -->` (a test runs it: `doc_block("NAME")`) or
`<!-- illustrative: why -->` (a diagram, an abbreviated transcript, minutes of load).
tests/unit/test_docs.py checks that every block is one or the other and that every
doc-test name is run by some test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- (doc-test|illustrative): (\S.*?) -->")
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    language: str
    text: str
    marker: str | None  # "doc-test" or "illustrative"
    label: str | None  # the doc-test's name, or why it is illustrative

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for fence in FENCE.finditer(text):
            before = text[: fence.start()].removesuffix("\n").rpartition("\n")[2]
            marked = MARKER.fullmatch(before.strip())
            found.append(
                Block(
                    document,
                    text.count("\n", 0, fence.start()) + 1,
                    fence.group(1),
                    fence.group(2),
                    marked.group(1) if marked else None,
                    marked.group(2) if marked else None,
                )
            )
    return found


def doc_block(name: str) -> str:
    """The text of the block marked `<!-- doc-test: name -->`."""
    named = [b for b in blocks() if b.marker == "doc-test" and b.label == name]
    assert len(named) == 1, f"{len(named)} blocks are marked doc-test: {name}"
    return named[0].text
