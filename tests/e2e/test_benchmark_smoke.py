"""The load benchmark keeps working: 5 seconds at 20 sessions per second, pairgate and baseline.

Not a timed test: it only checks that every arrival got through and the JSON has its shape.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import POSTGRES_URL, postgres_available

REPO = Path(__file__).resolve().parents[2]
PERCENTILES = {"p50", "p95", "p99", "max"}


def test_load_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    command = [sys.executable, "-m", "benchmarks.load", "--rate", "20", "--duration", "5"]
    subprocess.run([*command, "--json", str(out)], cwd=REPO, check=True, timeout=90)

    result = json.loads(out.read_text())
    assert result["rate"] == 20
    for target in ("pairgate", "baseline"):
        measured = result[target]
        assert measured["errors"] == 0, measured["example_error"]
        assert measured["sessions"] == 20 * 5  # every arrival was offered and got through
        assert set(measured["create_to_qr_ms"]) >= PERCENTILES
        assert set(measured["scan_to_ready_ms"]) >= PERCENTILES
        assert measured["create_to_qr_ms"]["max"] is not None
        assert measured["achieved_rate"] > 0
        assert measured["cpu_s"] > 0  # 100 pairings cost the server some CPU: it was measured
        assert measured["rss_mb"] > 0


def test_side_by_side_benchmark_smoke(tmp_path: Path) -> None:
    """benchmarks.ab against this same checkout: both servers take the load at once."""
    out = tmp_path / "ab.json"
    command = [sys.executable, "-m", "benchmarks.ab", "--before", str(REPO), "--runs", "1"]
    command += ["--case", "load", "--rate", "10", "--duration", "3", "--json", str(out)]
    subprocess.run(command, cwd=REPO, check=True, timeout=90)

    result = json.loads(out.read_text())
    per_version = {"ms_per_pairing", "p50_create_to_qr_ms", "p99_create_to_qr_ms"}
    assert [set(run) for run in result["runs"]] == [
        {f"{version}_{name}" for version in ("before", "after") for name in per_version} | {"ratio"}
    ]
    (run,) = result["runs"]
    before, after = result["before_ms_per_pairing"], result["after_ms_per_pairing"]
    assert (run["before_ms_per_pairing"], run["after_ms_per_pairing"]) == (before, after)
    assert before > 0 and after > 0
    assert run["before_p99_create_to_qr_ms"] > 0 and run["after_p99_create_to_qr_ms"] > 0
    assert 0 < run["after_p50_create_to_qr_ms"] <= run["after_p99_create_to_qr_ms"]
    assert result["ratio_after_before"] == pytest.approx(after / before, abs=0.002)
    # One run: its ratio is the median and both ends of the range.
    assert run["ratio"] == pytest.approx(after / before, abs=0.002)
    assert result["median_run_ratio"] == run["ratio"]
    assert result["run_ratio_range"] == [run["ratio"], run["ratio"]]
    # The same checkout on both sides, under the same load at once: alike within noise.
    assert 0.5 < result["ratio_after_before"] < 2


def test_side_by_side_settings_reach_the_after_server_alone(tmp_path: Path) -> None:
    """--after-env: a setting of `after` alone (what a setting costs, with --before .)."""
    out = tmp_path / "ab.json"
    command = [sys.executable, "-m", "benchmarks.ab", "--before", str(REPO), "--runs", "1"]
    command += ["--rate", "10", "--duration", "2", "--json", str(out)]
    subprocess.run(
        [*command, "--after-env", "PAIRGATE_STORE=memory"], cwd=REPO, check=True, timeout=90
    )
    assert json.loads(out.read_text())["after_env"] == {"PAIRGATE_STORE": "memory"}

    # A setting `after` refuses stops it, and the run, while `before` started as usual.
    broken = subprocess.run(
        [*command, "--after-env", "PAIRGATE_STORE=bogus"],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert broken.returncode != 0
    assert "PAIRGATE_STORE" in broken.stderr and "exited with status 2" in broken.stderr
    malformed = subprocess.run(
        [*command, "--after-env", "PAIRGATE_STORE"], cwd=REPO, capture_output=True, text=True
    )
    assert malformed.returncode != 0 and "NAME=VALUE" in malformed.stderr


def test_side_by_side_with_the_baseline_smoke(tmp_path: Path) -> None:
    """benchmarks.ab --before baseline: the bare baseline takes the same load at once."""
    out = tmp_path / "ab.json"
    command = [sys.executable, "-m", "benchmarks.ab", "--before", "baseline", "--runs", "1"]
    command += ["--case", "load", "--rate", "10", "--duration", "3", "--json", str(out)]
    subprocess.run(command, cwd=REPO, check=True, timeout=90)

    result = json.loads(out.read_text())
    assert result["before"] == "baseline"
    assert result["before_ms_per_pairing"] > 0 and result["after_ms_per_pairing"] > 0
    refused = subprocess.run(
        [sys.executable, "-m", "benchmarks.ab", "--before", "baseline", "--case", "unpaired"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert refused.returncode != 0 and "case load only" in refused.stderr


def test_side_by_side_while_holding_sessions_smoke(tmp_path: Path) -> None:
    """--hold: both servers keep ready sessions with their clients connected meanwhile."""
    out = tmp_path / "ab.json"
    command = [sys.executable, "-m", "benchmarks.ab", "--before", "baseline", "--runs", "1"]
    command += ["--rate", "10", "--duration", "2", "--hold", "20", "--json", str(out)]
    subprocess.run(command, cwd=REPO, check=True, timeout=120)

    (run,) = json.loads(out.read_text())["runs"]
    assert run["before_ms_per_pairing"] > 0 and run["after_ms_per_pairing"] > 0


def test_scale_benchmark_smoke(tmp_path: Path) -> None:
    """benchmarks.scale at 20 devices on SQLite: filled, started (all resumed), stopped."""
    out = tmp_path / "scale.json"
    command = [sys.executable, "-m", "benchmarks.scale", "--devices", "20", "--stores", "sqlite"]
    subprocess.run([*command, "--smoke", "--json", str(out)], cwd=REPO, check=True, timeout=90)

    (result,) = json.loads(out.read_text())["results"]
    assert result["store"] == "sqlite" and result["devices"] == 20
    for measure in ("fill_s", "first_healthz_s", "first_resumed_s", "stop_s", "rss_mb"):
        assert result[measure] > 0, measure
    assert result["first_healthz_s"] <= result["first_resumed_s"]


def test_neonize_store_benchmark_smoke(tmp_path: Path) -> None:
    """benchmarks.neonize_store with 3 devices: whatsmeow's store on SQLite and PostgreSQL."""
    if importlib.util.find_spec("neonize") is None:
        pytest.skip("neonize is not installed (pip install 'pairgate[neonize]')")
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432: the benchmark compares it")
    out = tmp_path / "neonize_store.json"
    command = [sys.executable, "-m", "benchmarks.neonize_store", "--devices", "3"]
    command += ["--postgres", POSTGRES_URL, "--json", str(out)]
    subprocess.run(command, cwd=REPO, check=True, timeout=60)

    result = json.loads(out.read_text())
    assert result["prekeys_per_linked_device"] == 812
    for store in ("sqlite", "postgres"):
        measured = result[store]
        assert measured["unexpected"] == []  # every attempt ended at its dial, not before
        assert measured["new_unlinked"] == 3  # new devices: no JID in the store
        assert measured["resumed_linked"] == 3  # resumed: whatsmeow loaded the stored device
        for phase in ("new_device_ms", "resume_ms", "offline_attempt_ms"):
            assert 0 < measured[phase]["p50"] <= measured[phase]["max"], phase
        # At least the 812 prekeys' 32-byte keys, per device; not more than a few MB.
        assert 812 * 32 < measured["bytes_per_linked_device"] < 4_000_000
        assert measured["store_bytes_linked"] > measured["store_bytes_unlinked"] > 0
        assert measured["rss_mb"]["after_offline"] > 0
        assert set(measured["open_files_added"]) >= {"after_new", "after_offline"}
    held = result["postgres"]["pg_connections"]
    assert set(held) >= {"after_first_new", "after_offline"}


def test_failover_benchmark_smoke(tmp_path: Path) -> None:
    """benchmarks.failover with 2 processes, 4 devices, 1 kill: the killed process's devices
    run again on the survivor, and the lease log is read (not a timed test)."""
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432: failover is measured on it")
    out = tmp_path / "failover.json"
    command = [sys.executable, "-m", "benchmarks.failover", "--processes", "2", "--runs", "1"]
    subprocess.run(
        [*command, "--devices", "4", "--json", str(out)], cwd=REPO, check=True, timeout=60
    )

    (result,) = json.loads(out.read_text())["results"]
    assert (result["processes"], result["devices"], result["runs"]) == (2, 4, 1)
    (run,) = result["each_run"]
    assert run["devices_moved"] == 2  # the devices were spread: 2 on each process
    assert run["leases_taken_over"] == 2  # the lease log shows the survivor took both
    assert 0 < run["first_lease_s"] <= run["last_lease_s"] < run["failover_s"]
    # (percentiles are rounded to hundredths, a run's time to thousandths)
    assert result["failover_s"]["max"] == pytest.approx(run["failover_s"], abs=0.0051)
    # 4 first grants and 2 taken over; none overlapping, none before the kill.
    assert result["lease_log"] == {
        "grants": 6,
        "overlapping": 0,
        "granted_before_kill": 0,
        "examples": [],
    }


def test_rooms_benchmark_smoke(tmp_path: Path) -> None:
    """Both parts: the managers compared, and two servers holding ready sessions while
    clients come and go (this tree on both sides)."""
    out = tmp_path / "rooms.json"
    command = [sys.executable, "-m", "benchmarks.rooms", "--clients", "50,400"]
    command += ["--server-sessions", "20", "--before", str(REPO), "--churn", "50"]
    subprocess.run([*command, "--json", str(out)], cwd=REPO, check=True, timeout=120)

    result = json.loads(out.read_text())
    assert [row["clients"] for row in result["managers"]] == [50, 400]
    for row in result["managers"]:
        assert row["python_socketio_ms"] > 0 and row["pairgate_ms"] > 0
    servers = result["servers"]
    assert [opened["opened"] for opened in servers["opened"]] == [20, 20]
    assert servers["before_ms_per_connection"] > 0 and servers["after_ms_per_connection"] > 0
