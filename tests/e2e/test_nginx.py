"""deploy/nginx.conf as written, with Debian's nginx in front of two real `pairgate serve`
processes on PostgreSQL + Redis: browsers stick to a process each and spread over both,
and the Scan-QR page pairs a key whose owner is the other process ("Simulate scan"
included). Only the upstream addresses and the listening port are changed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.service_process import ServiceProcess, free_port, poll
from tests.helpers import (
    POSTGRES_URL,
    REDIS_URL,
    postgres_available,
    postgres_schema,
    redis_available,
    unique_key,
)

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ROUTE_COOKIE = "pairgate_route"

pytestmark = [
    pytest.mark.skipif(
        not Path(NGINX).exists(),
        reason="Debian's nginx is missing and apt could not install it (scripts/test)",
    ),
    pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not on 127.0.0.1:5432"),
    pytest.mark.skipif(not redis_available(), reason="Redis is not on 127.0.0.1:6379"),
]


@dataclass
class Deployment:
    url: str
    processes: tuple[ServiceProcess, ServiceProcess]


def site_config(upstreams: list[str], port: int) -> str:
    """deploy/nginx.conf with these upstream addresses and port, nothing else changed."""
    text = CONFIG.read_text()
    servers = re.findall(r"^\s*server (pairgate-\d:8000);$", text, flags=re.MULTILINE)
    assert len(servers) == len(upstreams), servers
    for name, address in zip(servers, upstreams, strict=True):
        text = text.replace(f"server {name};", f"server {address};")
    assert text.count("listen 80;") == 1
    return text.replace("listen 80;", f"listen 127.0.0.1:{port};")


def start_nginx(prefix: Path, upstreams: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    (prefix / "logs").mkdir(parents=True)
    port = free_port()
    (prefix / "site.conf").write_text(site_config(upstreams, port))
    # The http context around the site, as Debian's /etc/nginx/nginx.conf gives it.
    (prefix / "nginx.conf").write_text(
        "pid nginx.pid;\nerror_log logs/error.log;\nevents {}\n"
        "http {\n  access_log logs/access.log;\n  include site.conf;\n}\n"
    )
    command = [NGINX, "-p", str(prefix), "-c", "nginx.conf", "-e", "logs/error.log"]
    process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited:\n{(prefix / 'logs/error.log').read_text()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    poll(up, 10, "nginx")
    return process, url


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("nginx")
    with postgres_schema("nginx") as schema:
        env = {
            "PAIRGATE_DATABASE_URL": f"{POSTGRES_URL}?schema={schema}",
            "PAIRGATE_REDIS_URL": REDIS_URL,
            "PAIRGATE_REDIS_CHANNEL": f"pairgate-test-{uuid.uuid4().hex}",
            "PAIRGATE_CREDENTIALS_DIR": str(root / "credentials"),
            "PAIRGATE_TRUSTED_PROXIES": "127.0.0.1",
        }
        processes: list[ServiceProcess] = []
        nginx = None
        try:
            for n in (1, 2):
                node = root / f"node{n}"
                processes.append(ServiceProcess.start(node, root / f"pairgate-{n}.log", env))
            nginx, url = start_nginx(root / "proxy", [f"127.0.0.1:{p.port}" for p in processes])
            yield Deployment(url, (processes[0], processes[1]))
        finally:
            if nginx is not None:
                nginx.terminate()
                nginx.wait(10)
            for process in processes:
                process.kill()


def process_of(deployment: Deployment, route: str | None) -> int:
    """Which process (0 or 1) an Engine.IO session opened through nginx with this route
    cookie lives in, proven by posting to it directly (the other answers 400)."""
    cookies = {ROUTE_COOKIE: route} if route else {}
    handshake = httpx.get(
        f"{deployment.url}/socket.io/?EIO=4&transport=polling", cookies=cookies, timeout=5
    )
    assert handshake.status_code == 200, handshake.text
    assert ROUTE_COOKIE not in handshake.cookies  # a route never changes mid-session
    sid = re.search(r'"sid":"([^"]+)"', handshake.text)
    assert sid is not None, handshake.text
    session = f"/socket.io/?EIO=4&transport=polling&sid={sid[1]}"
    # Socket.IO's CONNECT packet, straight to each process.
    owners = [
        index
        for index, process in enumerate(deployment.processes)
        if httpx.post(process.url + session, content=b"40", timeout=5).status_code == 200
    ]
    assert len(owners) == 1, owners
    # The session's next request through nginx reaches it too (sticky): a CLOSE packet.
    closed = httpx.post(deployment.url + session, content=b"1", cookies=cookies, timeout=5)
    assert closed.status_code == 200, closed.text
    return owners[0]


def new_routes(deployment: Deployment, count: int) -> list[str]:
    """The routes nginx hands to `count` browsers loading the page for the first time."""
    routes = []
    for _ in range(count):
        page = httpx.get(f"{deployment.url}/", timeout=5)
        assert page.status_code == 200
        routes.append(page.cookies[ROUTE_COOKIE])
    return routes


def test_each_browser_sticks_to_one_process_and_browsers_spread(deployment: Deployment) -> None:
    routes = new_routes(deployment, 16)
    assert len(set(routes)) == len(routes)
    placed = [process_of(deployment, route) for route in routes]
    # Each process gets some (16 fair coins all alike: 1 in 32,768).
    assert set(placed) == {0, 1}, placed
    # A client without the cookie (a script) sticks by its address.
    assert process_of(deployment, None) == process_of(deployment, None)


async def test_the_page_pairs_a_key_whose_owner_is_the_other_process(
    deployment: Deployment, browser: Any
) -> None:
    from tests.e2e.test_scan_page import (
        RECORD_STATES,
        expect,
        status,
        wait_for_qr,
        wait_for_state,
    )

    routes = new_routes(deployment, 16)
    by_process = {process_of(deployment, route): route for route in routes}
    assert set(by_process) == {0, 1}
    key = unique_key("nginx")
    pages = []
    for index in (0, 1):  # the owner's page first: its create starts the key there
        context = await browser.new_context()
        await context.add_cookies(
            [{"name": ROUTE_COOKIE, "value": by_process[index], "url": deployment.url}]
        )
        page = await context.new_page()
        await page.add_init_script(RECORD_STATES)
        await page.goto(f"{deployment.url}/?key={key}")
        await wait_for_qr(page)
        pages.append(page)
    running = [
        httpx.get(f"{p.url}/healthz").json()["sessions_running"] for p in deployment.processes
    ]
    assert running == [1, 0], running  # the key runs on process 0 only

    # The page on process 1 plays the phone: the code is read there, the scan forwarded.
    other = pages[1]
    await other.get_by_role("button", name="Simulate scan").click()
    await expect(other.locator("#sim-result")).to_contain_text("done")
    for page in pages:
        states = await wait_for_state(page, "ready")
        assert states.index("authenticated") < states.index("ready")
        await expect(status(page)).to_have_attribute("data-state", "ready")
    assert "Traceback" not in deployment.processes[0].log() + deployment.processes[1].log()
