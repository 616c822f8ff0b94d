from __future__ import annotations

import pytest

from entrypoints.cli import main


def test_a_bad_setting_is_a_clear_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAIRGATE_SIM_QR_TIMEOUTS", "0,1")
    assert main(["serve", "--port", "99999"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "pairgate: PAIRGATE_PORT: Input should be less than or equal to 65535",
        "pairgate: PAIRGATE_SIM_QR_TIMEOUTS: "
        "must be a comma list of positive seconds, e.g. 60,20,20",
    ]
