"""The README's Python client example, run as written against a real server."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from tests.helpers import Server

README = Path(__file__).parents[2] / "README.md"


def python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "the README has one Python client example"
    return blocks[0]


async def test_the_python_example_pairs_a_device(server: Server, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(python_example().replace("http://127.0.0.1:8000", server.url))
    example = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    assert example.stdout is not None
    seen = []
    async with asyncio.timeout(20):
        while line := (await example.stdout.readline()).decode():
            seen.append(line.strip())
            if line.startswith("scan me within"):
                # Play the phone: scan the code the example was shown.
                code = server.pairgate.sessions.get("device123").qr_code
                await server.post("/api/simulator/devices/device123/scan", {"code": code})
        assert await example.wait() == 0
    assert seen[0].startswith("{'ok': True, 'key': 'device123', 'state': 'created'")
    assert seen[1] == "scan me within 2 s"
    assert seen[-1] == "linked: device123"
