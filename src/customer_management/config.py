"""Settings, from command-line flags with environment-variable equivalents."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from customer_management.domain.settings import Settings

DEFAULT_DATABASE_URL = "sqlite:///customer-management.db"


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 50051
    http_port: int = -1
    hub_allowed_hosts: str = ""
    hub_claim_interval: float = 5.0
    database_url: str = DEFAULT_DATABASE_URL
    base_url: str = ""
    pool_size: int = 10
    pool_timeout: float = 2.0
    work_timeout: float = 30.0
    health_interval: float = 1.0
    grace_period: float = 10.0
    pin_pepper: str = ""
    pin_lock_minutes: float = 15.0
    pin_previous_peppers: str = ""
    card_key: str = ""
    phone_region: str = ""
    tokens_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    insecure: bool = False
    reflection: bool = True
    log_level: str = "INFO"
    log_format: str = "json"
    rpc_log_level: str = "DEBUG"
    metrics_port: int = -1
    otlp_endpoint: str = ""
    migrate: bool = True
    request_id_retention_hours: float = 168.0
    event_retention_hours: float = 168.0
    history: bool = True
    history_retention_hours: float = 0.0
    heartbeat_interval: float = 30.0
    max_watchers: int = 1000
    max_streams_per_connection: int = 1000
    watch_buffer: int = 10_000
    overload_latency: float = 0.5
    cache_mb: float = 64.0
    cache_staleness: float = 1.0
    publish_nats: str = ""
    nats_stream: str = "CUSTOMER_MANAGEMENT"
    nats_subject_prefix: str = "customers"
    nats_content_mode: str = "json"
    nats_duplicate_window: float = 120.0

    def settings(self, port: int) -> Settings:
        """What the resource services need of the configuration."""
        from customer_management.domain.settings import Settings

        previous = tuple(p.encode() for p in self.pin_previous_peppers.split(",") if p)
        return Settings(self.href_base(port), self.pin_pepper.encode(), previous, self.history)

    def href_base(self, port: int) -> str:
        """The base of every href; by default this server's own address, as bound."""
        scheme = "https" if self.tls_cert else "http"
        return self.base_url or f"{scheme}://localhost:{port}/tmf-api/customerManagement/v2"


def boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


# flag, environment variable, type, help
OPTIONS: list[tuple[str, str, Callable[[str], Any], str]] = [
    ("host", "CM_HOST", str, "address to listen on"),
    ("port", "CM_PORT", int, "gRPC port (0 picks a free one)"),
    (
        "http_port",
        "CM_HTTP_PORT",
        int,
        "port of the REST gateway (TMF JSON); -1: none, 0 picks a free one",
    ),
    (
        "hub_allowed_hosts",
        "CM_HUB_ALLOWED_HOSTS",
        str,
        "comma-separated hosts (or host:port) hub callbacks may be on; empty: none",
    ),
    (
        "hub_claim_interval",
        "CM_HUB_CLAIM_INTERVAL",
        float,
        "seconds between a replica's looks for hub listeners to deliver (and lease renewals)",
    ),
    (
        "database_url",
        "CM_DATABASE_URL",
        str,
        "SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://…",
    ),
    (
        "base_url",
        "CM_BASE_URL",
        str,
        "base of every href (default http://localhost:PORT/tmf-api/customerManagement/v2)",
    ),
    ("pool_size", "CM_POOL_SIZE", int, "database connections (and worker threads)"),
    (
        "pool_timeout",
        "CM_POOL_TIMEOUT",
        float,
        "seconds a call waits for a database connection before UNAVAILABLE (DATABASE_BUSY)",
    ),
    (
        "work_timeout",
        "CM_WORK_TIMEOUT",
        float,
        "seconds any database work may take, for callers without a shorter deadline",
    ),
    (
        "health_interval",
        "CM_HEALTH_INTERVAL",
        float,
        "seconds between the database checks behind the health status",
    ),
    ("grace_period", "CM_GRACE_PERIOD", float, "seconds in-flight calls get at shutdown"),
    ("pin_pepper", "CM_PIN_PEPPER", str, "server-side secret mixed into every PIN hash"),
    (
        "tokens_file",
        "CM_TOKENS_FILE",
        str,
        "JSON file of callers: token SHA-256, identity and scopes (see docs/security.md)",
    ),
    ("tls_cert", "CM_TLS_CERT", str, "PEM certificate (chain) to serve TLS with"),
    ("tls_key", "CM_TLS_KEY", str, "PEM private key of --tls-cert"),
    (
        "tls_client_ca",
        "CM_TLS_CLIENT_CA",
        str,
        "PEM CA whose client certificates are required (mutual TLS)",
    ),
    (
        "insecure",
        "CM_INSECURE",
        boolean,
        "allow listening beyond loopback without authentication",
    ),
    ("reflection", "CM_REFLECTION", boolean, "serve gRPC server reflection"),
    (
        "phone_region",
        "CM_PHONE_REGION",
        str,
        "country (ISO 3166, e.g. GB) of national telephone numbers; empty: numbers need +country",
    ),
    (
        "card_key",
        "CM_CARD_KEY",
        str,
        "secret keying card fingerprints (none are made without it)",
    ),
    (
        "pin_previous_peppers",
        "CM_PIN_PREVIOUS_PEPPERS",
        str,
        "comma-separated peppers being rotated out (their PINs verify and are rehashed)",
    ),
    (
        "pin_lock_minutes",
        "CM_PIN_LOCK_MINUTES",
        float,
        "how long five failed PIN verifications in a row lock an account's PIN",
    ),
    ("log_level", "CM_LOG_LEVEL", str, "DEBUG, INFO, WARNING or ERROR"),
    ("log_format", "CM_LOG_FORMAT", str, "json (one JSON object a line) or text"),
    (
        "rpc_log_level",
        "CM_RPC_LOG_LEVEL",
        str,
        "level of the one log line per RPC; the default DEBUG writes none at the default"
        " --log-level (they cost a Get a sixth of its throughput); INFO writes them",
    ),
    (
        "metrics_port",
        "CM_METRICS_PORT",
        int,
        "port of the Prometheus metrics endpoint (/metrics); -1: none, 0 picks a free one",
    ),
    (
        "otlp_endpoint",
        "CM_OTLP_ENDPOINT",
        str,
        "OTLP/gRPC collector (e.g. http://localhost:4317) to send traces to; empty: no tracing",
    ),
    (
        "migrate",
        "CM_MIGRATE",
        boolean,
        "apply pending schema migrations at start-up; false: refuse to start on an old schema",
    ),
    (
        "request_id_retention_hours",
        "CM_REQUEST_ID_RETENTION_HOURS",
        float,
        "how long a Create's request_id is remembered for retries",
    ),
    (
        "event_retention_hours",
        "CM_EVENT_RETENTION_HOURS",
        float,
        "how long events stay resumable in WatchEvents",
    ),
    (
        "history",
        "CM_HISTORY",
        boolean,
        "keep the field-level history of every change (ListChanges); false: keep none",
    ),
    (
        "history_retention_hours",
        "CM_HISTORY_RETENTION_HOURS",
        float,
        "how long field-level history entries are kept; 0: forever",
    ),
    (
        "heartbeat_interval",
        "CM_HEARTBEAT_INTERVAL",
        float,
        "seconds of silence after which a watch stream gets a heartbeat",
    ),
    ("max_watchers", "CM_MAX_WATCHERS", int, "open WatchEvents streams this server accepts"),
    (
        "max_streams_per_connection",
        "CM_MAX_STREAMS_PER_CONNECTION",
        int,
        "calls open at once on one HTTP/2 connection; more wait for a free stream",
    ),
    (
        "overload_latency",
        "CM_OVERLOAD_LATENCY",
        float,
        "seconds a read or write may take before the service admits fewer at once"
        " (the excess is answered RESOURCE_EXHAUSTED at once, with a RetryInfo)",
    ),
    (
        "cache_mb",
        "CM_CACHE_MB",
        float,
        "memory (MiB) for the resources Gets read most recently; 0: every Get reads the database",
    ),
    (
        "cache_staleness",
        "CM_CACHE_STALENESS",
        float,
        "seconds another replica's write may take to show in this one's cached Gets; past"
        " it (the database slow or away) Gets read the database",
    ),
    (
        "watch_buffer",
        "CM_WATCH_BUFFER",
        int,
        "events a watcher may fall behind before it is ended (it resumes from its token)",
    ),
    (
        "publish_nats",
        "CM_PUBLISH_NATS",
        str,
        "NATS server (e.g. nats://127.0.0.1:4222) to relay every event to, into JetStream;"
        " empty: no relay (docs/relay.md)",
    ),
    ("nats_stream", "CM_NATS_STREAM", str, "JetStream stream the relay publishes into"),
    (
        "nats_subject_prefix",
        "CM_NATS_SUBJECT_PREFIX",
        str,
        "first token of the relay's subjects: PREFIX.customer.created and so on",
    ),
    (
        "nats_content_mode",
        "CM_NATS_CONTENT_MODE",
        str,
        "json (a structured CloudEvent, data as TMF JSON) or protobuf (ce- headers, data as"
        " protobuf)",
    ),
    (
        "nats_duplicate_window",
        "CM_NATS_DUPLICATE_WINDOW",
        float,
        "seconds JetStream drops a republished event in, for a stream the relay creates",
    ),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Config()
    for name, env, kind, text in OPTIONS:
        default = getattr(defaults, name)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=kind(os.environ[env]) if env in os.environ else default,
            help=f"{text} [env {env}; default {default!r}]",
        )


def from_arguments(arguments: argparse.Namespace) -> Config:
    return Config(**{name: getattr(arguments, name) for name, *_ in OPTIONS})
