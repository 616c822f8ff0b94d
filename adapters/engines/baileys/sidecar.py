"""Sidecar: the Node process that hosts every Baileys socket, spoken to in JSON lines.

Commands go to its stdin with an id and are answered on its stdout by that id; events
about devices arrive on the same stream and go to `on_event`. When the process ends for
any reason, pending commands fail with SidecarError and `on_exit` is called once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SIDECAR_DIR = Path(__file__).parent / "sidecar"
SIDECAR_SCRIPT = SIDECAR_DIR / "index.mjs"
LINE_LIMIT = 1 << 20


class SidecarError(Exception):
    """The sidecar could not start, refused a command, or exited before answering it."""


Message = dict[str, Any]


class Sidecar:
    def __init__(
        self,
        argv: Sequence[str],
        on_event: Callable[[Message], None],
        on_exit: Callable[[], None],
        *,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self._argv = list(argv)
        self._on_event = on_event
        self._on_exit = on_exit
        self._env = dict(env) if env is not None else None
        self._ready_timeout = ready_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stderr_tail: deque[str] = deque(maxlen=10)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Spawn the process and wait until Baileys is loaded (its `ready` event)."""
        loop = asyncio.get_running_loop()
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                limit=LINE_LIMIT,
            )
        except OSError as error:
            raise SidecarError(f"cannot run {self._argv[0]!r}: {error}") from error
        self._ready = loop.create_future()
        self._stderr_tail.clear()
        process = self._process
        self._tasks = [
            asyncio.create_task(self._read_stdout(process), name="baileys-sidecar-stdout"),
            asyncio.create_task(self._read_stderr(process), name="baileys-sidecar-stderr"),
        ]
        try:
            await asyncio.wait_for(self._ready, self._ready_timeout)
        except TimeoutError:
            await self.close(grace=0)
            raise SidecarError("the Baileys sidecar did not start in time") from None
        log.info("Baileys sidecar started (pid %d)", process.pid)

    async def call(self, command: str, timeout: float = 30.0, **fields: Any) -> Message:
        """Send a command and wait for its answer (SidecarError if refused or lost)."""
        process = self._process
        if process is None or process.stdin is None or not self.running:
            raise SidecarError("the Baileys sidecar is not running")
        number = next(self._ids)
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[number] = answer
        line = json.dumps({"id": number, "cmd": command, **fields}) + "\n"
        try:
            process.stdin.write(line.encode())
            await process.stdin.drain()
            reply = await asyncio.wait_for(answer, timeout)
        except (OSError, TimeoutError) as error:
            raise SidecarError(f"the Baileys sidecar did not answer {command!r}") from error
        finally:
            self._pending.pop(number, None)
        if not reply.get("ok"):
            raise SidecarError(f"{command} failed: {reply.get('error')}")
        return reply

    async def close(self, grace: float = 5.0) -> None:
        """Close its stdin (it closes every socket and exits), kill it after `grace` s."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read_stdout(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:  # a line past LINE_LIMIT: the stream cannot be trusted
                log.error("Baileys sidecar wrote an oversized line; restarting it")
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                continue
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("Baileys sidecar wrote a line that is not JSON")
                continue
            self._dispatch(message)
        # Not in a `finally`: cancelled (the loop is closing), the process may live on,
        # and it exits by itself when its stdin closes with this process.
        await process.wait()
        self._exited(process)

    def _dispatch(self, message: Message) -> None:
        if "id" in message:
            answer = self._pending.get(message["id"])
            if answer is not None and not answer.done():
                answer.set_result(message)
        elif message.get("event") == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        else:
            self._on_event(message)

    def _exited(self, process: asyncio.subprocess.Process) -> None:
        gone = SidecarError(f"the Baileys sidecar exited with status {process.returncode}")
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(gone)
        if self._ready is not None and not self._ready.done():
            detail = " / ".join(self._stderr_tail) or "no output"
            self._ready.set_exception(SidecarError(f"the Baileys sidecar failed: {detail}"))
            return
        if process.returncode != 0:
            log.warning("%s", gone)
        self._on_exit()

    async def _read_stderr(self, process: asyncio.subprocess.Process) -> None:
        # Baileys' pino logs (warn level and up) and Node's own errors: never credentials.
        assert process.stderr is not None
        while line := await process.stderr.readline():
            text = line.decode(errors="replace").rstrip()[:1000]
            self._stderr_tail.append(text[:300])
            log.warning("Baileys sidecar: %s", text)
