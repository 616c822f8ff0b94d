"""Does a slow webhook receiver slow anyone else? Pairings and another receiver, measured.

    python -m benchmarks.slow_webhook --rate 50 --duration 10 --runs 2 --json slow.json

Each run starts two fresh `pairgate serve --simulate` servers one after the other, both
with a prompt receiver subscribed to every event type; the second also has a receiver that
answers each message only after `--delay` seconds (10 s: pairgate's default
PAIRGATE_WEBHOOK_TIMEOUT, so its messages also time out and are retried). Both take the
same open-loop load (benchmarks.load). Reported per server: create→QR percentiles and server
CPU per pairing, and the prompt receiver's lag (the event's recorded time to its arrival)
and how many messages it got. The modes alternate run by run, so a drift of the machine
touches both.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from adapters.webhooks.messages import EVENT_TYPES
from benchmarks.common import emit, pairgate_server, percentiles
from benchmarks.load import offer, summarise


class Receiver(ThreadingHTTPServer):
    """An HTTP receiver on loopback that answers after `delay` seconds and notes arrivals."""

    daemon_threads = True

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lags_ms: list[float] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        arrived = time.time()
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        recorded = datetime.fromisoformat(body["timestamp"]).timestamp()
        with self.server.lock:
            self.server.lags_ms.append((arrived - recorded) * 1000)
        time.sleep(self.server.delay)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def receiving(delay: float) -> Iterator[Receiver]:
    receiver = Receiver(delay)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()


def subscribe(url: str, receiver: Receiver) -> None:
    body = {"url": receiver.url, "events": list(EVENT_TYPES)}
    answer = httpx.post(f"{url}/api/webhooks", json=body, timeout=10)
    answer.raise_for_status()


def measure(slow: bool, rate: float, duration: float, clients: int, delay: float) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="pairgate-slowhook-"))
    env = {"PAIRGATE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}
    server = pairgate_server(data_dir, env)
    try:
        with receiving(0.0) as prompt, receiving(delay) as sluggish:
            subscribe(server.url, prompt)
            if slow:
                subscribe(server.url, sluggish)
            offer(server.url, 5, 1, 1)  # warm-up: imports, QR layouts, store tables
            time.sleep(1.0)  # the warm-up's messages delivered
            with prompt.lock:
                prompt.lags_ms.clear()
            cpu_before = server.cpu_s()
            outcomes, _ = offer(server.url, rate, duration, clients)
            result = summarise(outcomes, rate)
            cpu_s = server.cpu_s() - cpu_before
            time.sleep(2.0)  # the last messages' way to the prompt receiver
            with prompt.lock:
                lags = list(prompt.lags_ms)
        result["cpu_ms_per_pairing"] = round(1000 * cpu_s / max(1, len(outcomes)), 2)
        result["prompt_receiver"] = {"messages": len(lags), "lag_ms": percentiles(lags)}
        return result
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50, help="sessions per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds of arrivals")
    parser.add_argument("--clients", type=int, default=2, help="load-generating processes")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--delay", type=float, default=10.0, help="the slow receiver's answer")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    runs = []
    for number in range(args.runs):
        modes = [False, True] if number % 2 == 0 else [True, False]
        run: dict[str, Any] = {}
        for slow in modes:
            name = "with_slow_receiver" if slow else "without"
            run[name] = measure(slow, args.rate, args.duration, args.clients, args.delay)
            qr = run[name]["create_to_qr_ms"]
            lag = run[name]["prompt_receiver"]["lag_ms"]
            print(
                f"run {number + 1} {name}: create->qr p50 {qr['p50']} p99 {qr['p99']} ms, "
                f"cpu {run[name]['cpu_ms_per_pairing']} ms/pairing, prompt receiver "
                f"{run[name]['prompt_receiver']['messages']} messages, lag p99 {lag['p99']} ms",
                flush=True,
            )
        runs.append(run)
    result = {
        "benchmark": "slow_webhook",
        "rate": args.rate,
        "duration_s": args.duration,
        "delay_s": args.delay,
        "runs": runs,
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
