"""Settings from the environment, and the event store configuration they produce."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from adapters.store.config import StoreConfig, postgres_conninfo
from entrypoints.settings import Settings
from tests.conftest import TEST_CIPHER_KEY


def test_defaults_are_the_embedded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PAIRGATE_DATABASE_URL", "PAIRGATE_STORE", "POSTGRES_DBNAME"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.host, settings.port, settings.simulate) == ("127.0.0.1", 8000, False)
    assert settings.sim_qr_timeouts == (60.0, 20.0, 20.0, 20.0, 20.0, 20.0)
    assert settings.store_config().environment() == {
        "PERSISTENCE_MODULE": "adapters.store.sqlite:Factory",  # eventsourcing.sqlite's, tuned
        "SQLITE_DBNAME": "data/pairgate.sqlite3",
        "SQLITE_LOCK_TIMEOUT": "10",
        "SQLITE_SYNCHRONOUS": "normal",
        "IS_SNAPSHOTTING_ENABLED": "y",
        "SNAPSHOT_INTERVAL": "50",
    }


def test_variables_are_read_with_the_pairgate_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAIRGATE_SIMULATE", "1")
    monkeypatch.setenv("PAIRGATE_SIM_QR_TIMEOUTS", "2, 1.5")
    monkeypatch.setenv("PAIRGATE_DATA_DIR", "/var/lib/pairgate")
    settings = Settings()
    assert settings.simulate is True
    assert settings.sim_qr_timeouts == (2.0, 1.5)
    assert settings.data_dir == Path("/var/lib/pairgate")


@pytest.mark.parametrize("timeouts", ["0,1", "-5", "", "a,b"])
def test_qr_timeouts_must_be_positive_seconds(
    monkeypatch: pytest.MonkeyPatch, timeouts: str
) -> None:
    monkeypatch.setenv("PAIRGATE_SIM_QR_TIMEOUTS", timeouts)
    with pytest.raises(ValidationError, match="sim_qr_timeouts"):
        Settings()


def test_a_database_url_selects_postgres_and_stays_secret() -> None:
    settings = Settings(database_url="postgresql://app:s3cret%21@db.example:6543/pairs?schema=gw")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
    assert settings.store_config().environment() == {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_HOST": "db.example",
        "POSTGRES_PORT": "6543",
        "POSTGRES_DBNAME": "pairs",
        "POSTGRES_USER": "app",
        "POSTGRES_PASSWORD": "s3cret!",
        "POSTGRES_SCHEMA": "gw",
        "IS_SNAPSHOTTING_ENABLED": "y",
        "SNAPSHOT_INTERVAL": "50",
    }


def test_eventsourcing_postgres_variables_select_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAIRGATE_DATABASE_URL", raising=False)
    for name in [n for n in os.environ if n.startswith("POSTGRES_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("POSTGRES_DBNAME", "pairgate")
    monkeypatch.setenv("POSTGRES_HOST", "db.example")
    monkeypatch.setenv("POSTGRES_POOL_SIZE", "3")
    config = Settings(snapshot_interval=0).store_config()
    assert config.kind == "postgres"
    # Read through the settings and handed on, with the same defaults as a URL's.
    assert config.environment() == {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_HOST": "db.example",
        "POSTGRES_PORT": "5432",
        "POSTGRES_DBNAME": "pairgate",
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "",
        "POSTGRES_POOL_SIZE": "3",
    }
    assert postgres_conninfo(config) == (
        "host=db.example port=5432 dbname=pairgate user=postgres password=''",
        None,
    )


def test_a_database_url_wins_over_postgres_variables_part_by_part() -> None:
    variables = {"POSTGRES_HOST": "elsewhere", "POSTGRES_PASSWORD": "pw", "POSTGRES_SCHEMA": "s"}
    url = "postgresql://app@db.example/pairs?sslmode=disable&schema=gw"
    config = StoreConfig(kind="postgres", database_url=url, postgres_env=variables)
    environment = config.environment()
    assert {n: environment[n] for n in variables} == {
        "POSTGRES_HOST": "db.example",
        "POSTGRES_PASSWORD": "pw",  # the URL names none
        "POSTGRES_SCHEMA": "gw",
    }
    assert (environment["POSTGRES_PORT"], environment["POSTGRES_USER"]) == ("5432", "app")
    assert config.identity() == "postgres:db.example:5432/pairs?schema=gw"
    conninfo, schema = postgres_conninfo(config)
    assert conninfo_to_dict(conninfo) == {
        "host": "db.example",
        "port": "5432",
        "dbname": "pairs",
        "user": "app",
        "password": "pw",
    }
    assert schema == "gw"
    bare = StoreConfig(kind="postgres", database_url="postgresql://")
    assert bare.identity() == "postgres:127.0.0.1:5432/postgres?schema=public"


def test_pairgate_variables_never_reach_eventsourcing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eventsourcing reads `<APP NAME>_<NAME>` before `<NAME>`: from the process
    environment, PAIRGATE_CIPHER_KEY would override the configured key."""
    from adapters.store.config import open_store

    monkeypatch.setenv("PAIRGATE_PERSISTENCE_MODULE", "no.such.module")
    open_store(StoreConfig(kind="memory")).close()
    monkeypatch.setenv("PAIRGATE_CIPHER_KEY", "q1Jq3dN8oRMVf0mvbHJxE8sGfJvnc5ySxXtxKQOTiNM=")
    configured = StoreConfig(data_dir=tmp_path, cipher_key=TEST_CIPHER_KEY)
    sessions = open_store(configured)
    sessions.create("dev", "Phone", "simulator", "alice")
    sessions.close()
    monkeypatch.delenv("PAIRGATE_CIPHER_KEY")
    again = open_store(configured)  # written with the configured key
    assert again.get("dev").name == "Phone"
    again.close()


def test_other_url_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        StoreConfig(kind="postgres", database_url="mysql://db/pairs").environment()


def test_memory_store_for_experiments() -> None:
    environment = Settings(store="memory", snapshot_interval=0).store_config().environment()
    assert environment == {"PERSISTENCE_MODULE": "eventsourcing.popo"}


def test_the_sqlite_store_syncs_as_configured(tmp_path: Path) -> None:
    from adapters.store.config import open_store

    for setting, pragma in (("normal", 1), ("full", 2)):
        config = Settings(data_dir=tmp_path / setting, sqlite_synchronous=setting).store_config()
        sessions = open_store(config)
        try:
            with sessions.recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
                cursor.execute("PRAGMA synchronous")
                assert cursor.fetchone()[0] == pragma
        finally:
            sessions.close()


@pytest.mark.parametrize(("given", "read"), [("", None), ("  ", None), ("0", 0), ("500", 500)])
def test_the_cap_on_connections_is_a_count_or_the_default(
    monkeypatch: pytest.MonkeyPatch, given: str, read: int | None
) -> None:
    monkeypatch.setenv("PAIRGATE_MAX_CONNECTIONS", given)
    assert Settings().max_connections == read


def test_a_negative_cap_on_connections_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAIRGATE_MAX_CONNECTIONS", "-1")
    with pytest.raises(ValidationError, match="max_connections"):
        Settings()
