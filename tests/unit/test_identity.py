from __future__ import annotations

import logging

import pytest

from adapters.identity import DEFAULT_IDENTITY, Identities
from entrypoints.bootstrap import bootstrap
from entrypoints.settings import Settings


def test_tokens_name_identities() -> None:
    identities = Identities.parse("alice:a-token, bob:b-token\ncarol:c:with:colons")
    assert identities.required and identities.names == ["alice", "bob", "carol"]
    assert identities.identify("a-token") == "alice"
    assert identities.identify("c:with:colons") == "carol"
    assert identities.from_bearer("Bearer b-token") == "bob"
    assert identities.from_bearer("bearer b-token") == "bob"
    for wrong in ("", "a-toke", "a-token ", None, 42):
        assert identities.identify(wrong) is None
    assert identities.from_bearer("Basic b-token") is None
    assert identities.from_bearer(None) is None


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("alice", "entry 1 is not identity:token"),
        ("a:x,:y", "entry 2 is not identity:token"),
        ("a:x,b:x", "entry 2 repeats another identity's token"),
    ],
)
def test_malformed_tokens_are_refused(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Identities.parse(spec)


def test_without_tokens_everyone_is_one_identity_and_the_log_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert Identities().identify(None) == DEFAULT_IDENTITY
    with caplog.at_level(logging.INFO, logger="pairgate"):
        pairgate = bootstrap(Settings(store="memory"))
    pairgate.sessions.close()
    assert "no PAIRGATE_TOKENS: every client is the single identity 'default'" in caplog.text


def test_tokens_never_reach_the_settings_repr() -> None:
    settings = Settings(tokens="alice:very-secret-token")
    assert "very-secret-token" not in repr(settings)
    assert settings.identities().identify("very-secret-token") == "alice"
