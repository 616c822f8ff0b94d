"""pairgate's settings: read once from PAIRGATE_* variables (and CLI flags), then passed down."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from limits import parse_many
from pydantic import Field, PrivateAttr, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from adapters.engines.whatsapp import QR_TIMEOUTS
from adapters.identity import Identities
from adapters.limits.history import HistoryAllowance
from adapters.redis_check import redis_target
from adapters.store.config import StoreConfig
from adapters.store.config import check_url as check_database_url
from domain.application.history import MAX_PAGE_SIZE
from domain.model.proxy import check_proxy

# The settings that hold a URL with a possible password, and the check each must pass.
SECRET_URL_CHECKS: dict[str, Callable[[str], object]] = {
    "database_url": check_database_url,
    "proxy": check_proxy,
    "redis_url": redis_target,
}

# Pairings at once per identity: more could squat keys (one namespace) others need.
UNPAIRED_PER_IDENTITY = 100
NETWORK_LISTS = ("trusted_proxies", "webhook_allowed_networks", "proxy_allowed_networks")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAIRGATE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    simulate: bool = False
    data_dir: Path = Path("data")
    # At start-up, close sessions a crashed run left live and resume paired devices. On
    # PostgreSQL every process also takes over devices without a holder every takeover
    # interval, whatever this says; false there only skips the look at start-up.
    recover: bool = True
    # Paired devices started again per second after a start (or a takeover); 0: no bound.
    resume_rate: float = Field(100.0, ge=0)
    # Several processes on one PostgreSQL store: seconds between looks for devices whose
    # process has gone (the failover bound), and between checks of this process's leases.
    takeover_interval: float = Field(15.0, gt=0)
    lease_check_interval: float = Field(2.0, gt=0)
    # Seconds between looks at the event log for other processes' events, by consumers
    # that follow it (the sessions read model, webhooks); this process's own wake them.
    follow_interval: float = Field(1.0, gt=0)
    # Webhooks: networks (or addresses) webhook URLs may reach besides public addresses
    # (loopback, link-local and private ones are refused otherwise); seconds a receiver
    # gets to answer; deliveries in flight per subscription; retries: the first delay
    # (doubling, with jitter, up to the max), and how long before a delivery is given up
    # as a dead letter.
    webhook_allowed_networks: Annotated[tuple[str, ...], NoDecode] = ()
    webhook_timeout: float = Field(10.0, gt=0)
    webhook_concurrency: int = Field(8, ge=1, le=256)
    webhook_retry_delay: float = Field(1.0, gt=0)
    webhook_retry_max_delay: float = Field(300.0, gt=0)
    webhook_retry_for: float = Field(86_400.0, gt=0)
    # Linked devices' WhatsApp credentials (0700 per device); default: <data dir>/credentials.
    credentials_dir: Path | None = None
    database_url: SecretStr | None = None
    # whatsmeow's own credential stores in PostgreSQL instead of SQLite files.
    neonize_database_url: SecretStr | None = None
    # `identity:token` pairs (comma-separated), or a file of them; unset: one identity.
    tokens: SecretStr | None = None
    tokens_file: Path | None = None
    # Origins allowed to open Socket.IO connections besides the server's own; "*" for any.
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # Host names served besides the built-in ones (the loopback names; bound beyond
    # loopback, also any IP address and this machine's name): "pairgate.example.com",
    # "*.example.com", or "*" for any. Other Hosts get 400 (DNS rebinding).
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    # AES-GCM key (base64 of 16, 24 or 32 bytes) for events at rest; `pairgate keygen`.
    cipher_key: SecretStr | None = None
    # Save a snapshot of a session every N events (0: never), so long histories load fast.
    snapshot_interval: int = Field(50, ge=0)
    # SQLite store durability: "normal" (WAL; a killed process loses nothing, a power cut
    # may lose the last commits) or "full" (an fsync at every commit).
    sqlite_synchronous: Literal["normal", "full"] = "normal"
    # eventsourcing's own POSTGRES_* variables, read once here like every other setting:
    # POSTGRES_DBNAME selects the postgres store, and all of them configure it.
    _postgres_env: dict[str, str] = PrivateAttr(default_factory=lambda: _postgres_variables())
    store: Literal["sqlite", "postgres", "memory"] | None = Field(
        None, description="Defaults to postgres when a database URL is set, else sqlite."
    )
    sim_qr_timeouts: Annotated[tuple[float, ...], NoDecode] = QR_TIMEOUTS
    sim_reconnect_delay: float = Field(1.0, ge=0)
    # Seconds the simulator's passkey account gives to answer its passkey request.
    sim_passkey_timeout: float = Field(60.0, gt=0)
    # Seconds a silent engine gets after its last QR code before pairgate expires it.
    expiry_grace: float = Field(5.0, ge=0)
    # Seconds an engine gets, after a session is created, to show its first QR code.
    start_timeout: float = Field(60.0, gt=0)
    # Seconds a SIGTERM stop may take (announce, stop engines, close connections) before
    # pairgate stops anyway.
    shutdown_grace: int = Field(10, ge=1)
    max_payload_bytes: int = Field(65536, ge=1024)
    # Request rates (`limits` notation: "20/second;300/minute"; empty: no limit).
    rate_limit_connection: str = "20/second;600/minute"
    rate_limit_identity: str = "200/second"
    # The HTTP API's requests per identity (per client address without tokens).
    rate_limit_http: str = "50/second;1800/minute"
    # History records one identity (one address without tokens) may read, over HTTP and
    # Socket.IO together; a page counts the records it asks for (at most 1,000).
    rate_limit_history: str = "1000/second;20000/minute"
    # Live sessions one identity may run, and pairings under way server-wide (0: no cap).
    max_sessions: int = Field(1000, ge=0)
    max_unpaired: int = Field(5000, ge=0)
    # Pairings under way per identity (0: no cap). Unset: 100 with tokens, none without
    # (a single identity has nobody to lock out; PAIRGATE_MAX_UNPAIRED bounds it).
    max_unpaired_per_identity: int | None = Field(None, ge=0)
    # Threads that run event store calls; 0: a local store's calls run on the event loop
    # (quicker than waking a thread). Unset: 0 for sqlite and memory, 4 for postgres.
    store_threads: int | None = Field(None, ge=0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # "json": one JSON object per log line (time, level, logger, message, key).
    log_format: Literal["text", "json"] = "text"
    # Redis for Socket.IO fan-out between processes (unset: the in-memory manager).
    redis_url: SecretStr | None = None
    # The proxy of a pairing that names none (http, https or socks5 URL, credentials
    # allowed; unset: direct). Recorded with each pairing: a resumed device keeps its own.
    proxy: SecretStr | None = None
    # Networks a pairing's own proxy may be in besides public addresses (as for webhooks).
    proxy_allowed_networks: Annotated[tuple[str, ...], NoDecode] = ()
    # The Redis pub/sub channel of this deployment (pub/sub ignores Redis's database
    # number). Unset: `pairgate-` and a hash of the store's identity, so processes of one
    # store share a channel and other deployments on the same Redis do not hear them.
    redis_channel: str | None = Field(None, min_length=1)
    # WebSocket compression (permessage-deflate) for clients that offer it, as browsers
    # do. Off: QR images are base64 PNG and barely compress, while each compressed
    # connection holds zlib state (500 unpaired sessions: 106.8 KB RSS and 2.19 ms per QR
    # rotation each with it, 58.4 KB and 1.37 ms without; docs/performance.md).
    ws_compression: bool = False
    # Milliseconds the kernel may delay the server's timers (Linux timer slack), so that
    # timers due close together wake the event loop once: 2,000 idle connections' pings
    # and rotating QR codes woke it ~400 times a second, each wake-up on a cold CPU
    # (docs/performance.md). 0: the kernel's default (50 µs).
    timer_slack_ms: float = Field(100.0, ge=0, le=1000)
    # Engine.IO transports offered; "websocket" alone needs no sticky sessions.
    transports: Annotated[tuple[str, ...], NoDecode] = ("polling", "websocket")
    # Proxies (addresses or networks) whose X-Forwarded-For names the client. None by
    # default: any other peer could name any address and escape its ban or frame another.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    # Seconds a connection gets to send a request's headers (slow headers hold a file
    # descriptor each), and connections one client address may hold open (0: no cap;
    # trusted proxies have none).
    header_timeout: float = Field(10.0, gt=0)
    max_connections_per_address: int = Field(100, ge=0)
    # Open connections in all (None: the open-files limit less a reserve; 0: no cap).
    max_connections: int | None = Field(None, ge=0)
    # Engine.IO sessions one address may hold before they send a Socket.IO CONNECT (0:
    # no cap), and seconds a session gets to send it before it is closed.
    max_handshakes_per_address: int = Field(50, ge=0)
    connect_timeout: float = Field(10.0, gt=0)

    @field_validator("allowed_origins", "allowed_hosts", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def identities(self) -> Identities:
        """From PAIRGATE_TOKENS and PAIRGATE_TOKENS_FILE together (SettingError naming
        the one that is wrong)."""
        spec = reveal(self.tokens) or ""
        try:
            Identities.parse(spec)
        except ValueError as bad:
            raise SettingError("PAIRGATE_TOKENS", str(bad)) from None
        if self.tokens_file is None:
            return Identities.parse(spec)
        try:
            spec += "," + self.tokens_file.read_text()
            return Identities.parse(spec)
        except (OSError, ValueError) as bad:
            reason = bad.strerror if isinstance(bad, OSError) else bad
            raise SettingError("PAIRGATE_TOKENS_FILE", f"{self.tokens_file}: {reason}") from None

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("database_url", "proxy", "redis_url")
    @classmethod
    def _secret_url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # Each check raises a ValueError that never quotes the URL (it may hold a password).
        if value is not None:
            SECRET_URL_CHECKS[str(info.field_name)](value.get_secret_value())
        return value

    @field_validator("rate_limit_connection", "rate_limit_identity", "rate_limit_http")
    @classmethod
    def _rate(cls, value: str) -> str:
        if value.strip():
            parse_many(value)  # ValueError names the part it cannot read
        return value.strip()

    @field_validator("max_connections", mode="before")
    @classmethod
    def _default_if_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit_history")
    @classmethod
    def _history_rate(cls, value: str) -> str:
        HistoryAllowance(value.strip(), MAX_PAGE_SIZE)  # ValueError says what is wrong
        return value.strip()

    @field_validator("transports", mode="before")
    @classmethod
    def _transports(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if not value or not set(value) <= {"polling", "websocket"}:
            raise ValueError("must be polling, websocket or polling,websocket")
        return value

    @field_validator(*NETWORK_LISTS, mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        for proxy in value:
            ipaddress.ip_network(proxy, strict=False)  # ValueError names what it cannot read
        return value

    @field_validator("sim_qr_timeouts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(float(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("sim_qr_timeouts")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(t <= 0 for t in value):
            raise ValueError("must be a comma list of positive seconds, e.g. 60,20,20")
        return value

    @property
    def credentials_path(self) -> Path:
        return self.credentials_dir or self.data_dir / "credentials"

    @property
    def cipher(self) -> str | None:
        return reveal(self.cipher_key)

    @property
    def redis(self) -> str | None:
        return reveal(self.redis_url)

    def unpaired_per_identity(self, identities: Identities) -> int:
        if self.max_unpaired_per_identity is not None:
            return self.max_unpaired_per_identity
        return UNPAIRED_PER_IDENTITY if identities.required else 0

    def fanout_channel(self) -> str:
        return self.redis_channel or f"pairgate-{self.store_config().fingerprint()}"

    def store_config(self) -> StoreConfig:
        kind = self.store
        if kind is None:
            postgres = self.database_url or self._postgres_env.get("POSTGRES_DBNAME")
            kind = "postgres" if postgres else "sqlite"
        return StoreConfig(
            kind=kind,
            data_dir=self.data_dir,
            database_url=reveal(self.database_url),
            postgres_env=dict(self._postgres_env),
            cipher_key=reveal(self.cipher_key),
            snapshot_interval=self.snapshot_interval,
            sqlite_synchronous=self.sqlite_synchronous,
        )


class SettingError(Exception):
    """A setting that cannot be used: its variable's name, and why (never its value)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name


def _postgres_variables() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("POSTGRES_")}


def reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
