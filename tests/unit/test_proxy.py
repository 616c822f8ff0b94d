"""A session's proxy: the domain's rule for a usable URL, what may be shown of it, and the
service handing it to the engine at the start of a pairing and again at every resume."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.application.history import session_history
from domain.application.pairing import PairingService
from domain.application.store_calls import StoreAccess
from domain.model.proxy import PROXY_PATTERN, InvalidProxyError, check_proxy, public_proxy
from tests.unit.fakes import FakeEngine
from tests.unit.test_pairing_service import KEY, FakeCatalog, FakeClock, FakeNotifier, build

URL = "socks5://alice:p%40ss@proxy.example:1080"


@pytest.mark.parametrize(
    "url",
    [URL, "http://10.0.0.1:3128", "HTTPS://u@proxy.example:443/", "socks5://[::1]:1080"],
)
def test_a_usable_proxy_is_kept_as_given(url: str) -> None:
    assert check_proxy(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "socks4://proxy.example:1080",
        "proxy.example:1080",
        "socks5://proxy.example",
        "socks5://proxy.example:0",
        "socks5://proxy.example:65536",
        "socks5://proxy.example:port",
        "http://proxy.example:80/path",
        "http://proxy.example:80?q=1",
        "http://proxy.example:80#f",
        "http://:secret@proxy.example:80",
        "http://proxy example:80",
        "http://" + "a" * 2048 + ":80",
    ],
)
def test_an_unusable_proxy_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(InvalidProxyError) as refused:
        check_proxy(url)
    assert url not in str(refused.value) and "secret" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (URL, "socks5://proxy.example:1080"),
        ("HTTP://u:p@Proxy.Example:8080", "http://proxy.example:8080"),
        ("socks5://u:p@[::1]:1080", "socks5://[::1]:1080"),
    ],
)
def test_what_is_shown_of_a_proxy_is_its_scheme_host_and_port(url: str, shown: str) -> None:
    assert public_proxy(url) == shown


async def test_the_engine_gets_the_pairings_proxy_at_its_start_and_at_every_resume() -> None:
    world = build()
    await world.service.create(KEY, "My Device", "baileys", "alice", "sid-1", proxy=URL)
    assert world.engine.proxies[KEY] == URL
    events = world.engine.events[KEY]
    await events.qr_issued(KEY, "code-1", 60)
    await events.paired(KEY)
    await events.connected(KEY)
    await world.service.shutdown()
    records = session_history(world.sessions.history(KEY))
    assert records[0]["proxy"] == "socks5://proxy.example:1080"
    assert "p%40ss" not in str(records) and all("proxy" not in r for r in records[1:])
    # The next process resumes the paired device through the same proxy.
    engine = FakeEngine()
    catalog = FakeCatalog({"baileys": engine})
    later = PairingService(StoreAccess(world.sessions), catalog, FakeNotifier(), FakeClock())
    recovery = await later.recover()
    assert recovery.resumed == [KEY]
    assert engine.proxies[KEY] == URL
    await later.shutdown()


async def test_a_new_pairing_without_a_proxy_dials_directly_or_through_the_default() -> None:
    world = build()
    await world.service.create(KEY, "My Device", "baileys", "alice", "sid-1", proxy=URL)
    await world.service.delete(KEY, "alice")
    await world.service.create(KEY, "My Device", "baileys", "alice", "sid-1")
    assert world.engine.proxies[KEY] is None  # a restart records its own proxy (none)
    await world.service.shutdown()
    defaulted = build(default_proxy="http://10.0.0.7:3128")
    await defaulted.service.create(KEY, "My Device", "baileys", "alice", "sid-1")
    assert defaulted.engine.proxies[KEY] == "http://10.0.0.7:3128"
    await defaulted.service.shutdown()


def test_a_bad_default_proxy_stops_the_cli_without_quoting_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrypoints.cli import main
    from entrypoints.settings import Settings

    monkeypatch.setenv("PAIRGATE_PROXY", "ftp://u:topsecret@proxy.example:21")
    assert main(["serve", "--simulate"]) == 2
    said = capsys.readouterr().err
    assert "PAIRGATE_PROXY: a proxy URL's scheme is one of" in said and "topsecret" not in said
    assert "topsecret" not in repr(Settings(proxy="socks5://u:topsecret@proxy.example:1080"))


@settings(max_examples=300, deadline=None)
@given(st.from_regex(PROXY_PATTERN, fullmatch=True))
def test_every_url_the_published_pattern_allows_passes_the_check(url: str) -> None:
    assert check_proxy(url) == url
    assert public_proxy(url).count(":") == 2
