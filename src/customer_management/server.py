"""The grpc.aio server: the service, health, reflection, interceptors and shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from customer_management.api import reflection
from customer_management.api.admission import Admission
from customer_management.api.handlers import Policy, Wrapper
from customer_management.api.servicer import CustomerManagementServicer
from customer_management.changes.broker import Broker
from customer_management.changes.cloud_events import ContentMode
from customer_management.changes.delivery import Dispatcher
from customer_management.changes.hubs import Hubs
from customer_management.changes.relay import RelaySettings, warn_if_held_back
from customer_management.changes.relay_process import RelayProcess
from customer_management.changes.retention import (
    forget_old_events,
    forget_old_history,
    forget_old_request_ids,
)
from customer_management.changes.watching import Watching
from customer_management.config import Config
from customer_management.domain.cache import Decode, ResourceCache
from customer_management.domain.catalog import every_kind
from customer_management.domain.history import History
from customer_management.domain.pin_checks import PinChecks
from customer_management.domain.service import ResourceService
from customer_management.edge.callers import Callers
from customer_management.edge.methods import SERVICE
from customer_management.observability.metrics import MetricsEndpoint
from customer_management.rest.gateway import BASE_PATH, Gateway
from customer_management.store import migrate, outbox, relays
from customer_management.store.database import Database
from customer_management.store.errors import StoreBusy

log = logging.getLogger(__name__)
LOOPBACK = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})
HOUSEKEEPING_INTERVAL = 600.0
EVENT_POLL_INTERVAL = 0.25
"""Seconds between outbox reads when no commit or notification has woken the broker."""
MAX_REQUEST_BYTES = 1024 * 1024
"""A request message's limit: a resource is at most 512 KiB (see docs/api.md, Limits)."""
TRANSPORT_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),  # what a default client accepts
    # Idle connections are pinged every minute, so a vanished watcher is noticed; clients
    # may ping at most every 10 s (also between calls), and one that pings more often is
    # sent GOAWAY after two strikes.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 2),
]
SERVICE_NAME = SERVICE.full_name
LIVENESS = "liveness"
"""A health service name that is SERVING for as long as the process is up and not
stopping, whatever the database does: for liveness probes, which must not restart every
replica when the database is away (readiness asks for SERVICE_NAME)."""
RELAY = "relay"
"""The health service name of the NATS relay (--publish-nats): NOT_SERVING while events
wait for a broker that does not answer; the service's own health does not follow it."""
OUTBOX_COUNT_INTERVAL = 30.0
"""Seconds between counts of the outbox's events (for the metrics)."""


class Server:
    """One running service: start() migrates, listens and turns health SERVING."""

    def __init__(self, config: Config, *, span_exporter: Any = None) -> None:
        """`span_exporter`: where traces go instead of `--otlp-endpoint` (tests)."""
        self.config = config
        # Secure by default: without authentication, only this machine may call.
        authenticated = bool(config.tokens_file or config.tls_client_ca)
        if not authenticated and config.host not in LOOPBACK and not config.insecure:
            raise SystemExit(
                f"refusing to listen on {config.host} without authentication:"
                " configure --tokens-file or --tls-client-ca, or pass --insecure to allow it"
            )
        if bool(config.tls_cert) != bool(config.tls_key) or (
            config.tls_client_ca and not config.tls_cert
        ):
            raise SystemExit("TLS needs --tls-cert and --tls-key (and them for --tls-client-ca)")
        if config.nats_content_mode not in {mode.value for mode in ContentMode}:
            raise SystemExit("--nats-content-mode is json or protobuf")
        if config.publish_nats and not _token_like(config.nats_subject_prefix, dots=True):
            raise SystemExit("--nats-subject-prefix is NATS subject tokens (no spaces, * or >)")
        if config.publish_nats and not _token_like(config.nats_stream, dots=False):
            raise SystemExit("--nats-stream is a JetStream stream name (no spaces, ., * or >)")
        callers = Callers.load(config.tokens_file) if config.tokens_file else None
        self.callers = callers
        self._housekeeping: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self.database = Database(
            config.database_url,
            pool_size=config.pool_size,
            pool_timeout=config.pool_timeout,
            work_timeout=config.work_timeout,
        )
        self.admission = Admission(config.overload_latency)
        self.broker = Broker(
            self.database,
            poll_interval=EVENT_POLL_INTERVAL,
            heartbeat_interval=config.heartbeat_interval,
            buffer=config.watch_buffer,
            max_watchers=config.max_watchers,
        )
        self.decoders: dict[str, Decode] = {}
        """By kind, what a change event makes of its resource (filled in with the services)."""
        self.cache = ResourceCache(
            int(config.cache_mb * 1024 * 1024), config.cache_staleness, self.decoders
        )
        self.broker.follow(self.cache)
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.metrics = MetricsEndpoint()
        self.metrics.watch(self.database, self.broker, self.cache, self.admission)
        level = logging.getLevelNamesMapping().get(config.rpc_log_level.upper(), logging.INFO)
        self.wrapper = Wrapper(
            Policy(
                self.metrics.rpc,
                level,
                callers=callers,
                reflection_open=config.reflection,
                admission=self.admission,
            )
        )
        interceptors: list[Any] = []
        self.tracing: Any = None
        if config.otlp_endpoint:
            from customer_management.observability.tracing import Tracing

            self.tracing = Tracing(config.otlp_endpoint, exporter=span_exporter)
            self.tracing.instrument(self.database.read_engine, self.database.write_engine)
            interceptors.append(self.tracing.interceptor)
        self.grpc = grpc.aio.server(
            interceptors=interceptors or None,
            options=[
                *TRANSPORT_OPTIONS,
                ("grpc.max_concurrent_streams", config.max_streams_per_connection),
            ],
        )
        self.port = 0
        self.http_port = 0
        self.gateway_enabled = config.http_port >= 0
        self._http_socket: socket.socket | None = None
        self.gateway: Gateway | None = None
        self.dispatcher: Dispatcher | None = None
        self.relay: RelayProcess | None = None

    async def start(self) -> int:
        address = f"{self.config.host}:{self.config.port}"
        if not (self.config.tokens_file or self.config.tls_client_ca):
            if self.config.host in LOOPBACK:
                log.warning(
                    "no authentication configured: listening on loopback only (%s), where"
                    " every local caller may call every method",
                    self.config.host,
                )
            else:
                log.warning(
                    "no authentication configured and --insecure: anyone who reaches %s may"
                    " call every method",
                    self.config.host,
                )
        try:
            if self.config.tls_cert:
                self.port = self.grpc.add_secure_port(address, self._credentials())
            else:
                self.port = self.grpc.add_insecure_port(address)
        except RuntimeError as error:  # grpc's way of saying the bind failed
            await self.grpc.stop(None)
            raise SystemExit(f"cannot listen on {address}: is the port already taken?") from error
        if self.gateway_enabled:
            self._http_socket = self._bind_http()
            self.http_port = self._http_socket.getsockname()[1]
        self._add_services()
        if self.config.migrate:
            await asyncio.to_thread(migrate.upgrade, self.database)
        elif waiting := await asyncio.to_thread(migrate.pending, self.database):
            await self.grpc.stop(None)
            raise SystemExit(
                f"the schema lacks migrations {', '.join(waiting)}: run `customer-management"
                " migrate` first (or start with --migrate)"
            )
        if await asyncio.to_thread(self.database.setting, "autovacuum") == "off":
            log.warning(
                "PostgreSQL runs with autovacuum off: updated and deleted rows are never"
                " reclaimed, so tables and indexes grow and calls slow down over time"
            )
        await self.broker.start()  # before any call: a watcher needs its position
        await self.grpc.start()
        await self._start_relay()
        await self.database.ping()
        # What start-up built lives as long as the process: keep it out of the cyclic
        # collector's full passes, which otherwise stall every stream while they walk it.
        gc.freeze()
        if self.gateway is not None and self.dispatcher is not None:
            assert self._http_socket is not None
            await self.gateway.start(self._http_socket)
            await self.dispatcher.start()
            log.info(
                "serving the REST gateway on %s:%d%s",
                self.config.host,
                self.http_port,
                BASE_PATH,
            )
        if self.config.metrics_port >= 0:
            self.metrics.start(self.config.host.strip("[]"), self.config.metrics_port)
        await self._set_health(serving=True)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self._housekeeping = asyncio.create_task(self._keep_house())
        self._monitor = asyncio.create_task(self._follow_database())
        log.info(
            "serving %s on %s:%d, database %s",
            SERVICE_NAME,
            self.config.host,
            self.port,
            self.database.display_url,
            extra={
                "event": "serving",
                "grpc": f"{self.config.host}:{self.port}",
                "rest": f"{self.config.host}:{self.http_port}" if self.gateway_enabled else None,
                "metrics": f"{self.config.host}:{self.metrics.port}"
                if self.config.metrics_port >= 0
                else None,
                "database": self.database.display_url,
                "tracing": self.config.otlp_endpoint or None,
            },
        )
        return self.port

    def _credentials(self) -> grpc.ServerCredentials:
        def read(path: str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as error:
                raise SystemExit(f"cannot read {path}: {error}") from error

        client_ca = read(self.config.tls_client_ca) if self.config.tls_client_ca else None
        return grpc.ssl_server_credentials(
            [(read(self.config.tls_key), read(self.config.tls_cert))],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    def _bind_http(self) -> socket.socket:
        address = (self.config.host.strip("[]"), self.config.http_port)
        try:
            return socket.create_server(address, family=_family(self.config.host))
        except OSError as error:
            raise SystemExit(
                f"cannot listen on {self.config.host}:{self.config.http_port} for HTTP: {error}"
            ) from error

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The gRPC port's TLS settings for the REST gateway too."""
        if not self.config.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
            if self.config.tls_client_ca:
                context.load_verify_locations(self.config.tls_client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as error:
            raise SystemExit(f"cannot use the TLS files: {error}") from error
        return context

    def _add_services(self) -> None:
        # Hrefs name the REST gateway when there is one: that is where they resolve.
        settings = self.config.settings(self.http_port if self.gateway_enabled else self.port)
        cache = self.cache
        kinds = every_kind(self.config.phone_region, self.config.card_key.encode())
        customers, accounts, payment_means, credit_categories = every = tuple(
            ResourceService(kind, self.database, settings, cache) for kind in kinds
        )
        for service in every:
            self.decoders[service.kind.kind] = service.outputs.decode
        watching = Watching(self.database, self.broker, list(every))
        pin_checks = PinChecks(accounts, timedelta(minutes=self.config.pin_lock_minutes))
        servicer = CustomerManagementServicer(
            customers,
            accounts,
            payment_means,
            credit_categories,
            watching,
            pin_checks,
            History(self.database, [service.kind for service in every]),
        )
        registry = self.wrapper.registry(self.grpc)
        registry.add_service(SERVICE, servicer)
        if self.gateway_enabled:
            hubs = Hubs(self.database, watching, self.config.hub_allowed_hosts.split(","))
            services = {s.kind.kind: s for s in every}
            self.gateway = Gateway(
                services, hubs, self.callers, self._ssl_context(), self.config.grace_period
            )
            self.dispatcher = Dispatcher(
                hubs, watching, claim_interval=self.config.hub_claim_interval
            )
        if self.config.publish_nats:
            self.relay = RelayProcess(
                self.database,
                RelaySettings(
                    url=self.config.publish_nats,
                    stream=self.config.nats_stream,
                    subject_prefix=self.config.nats_subject_prefix,
                    content_mode=ContentMode(self.config.nats_content_mode),
                    duplicate_window=self.config.nats_duplicate_window,
                    source=settings.base_url,
                ),
                log_level=self.config.log_level,
                log_format=self.config.log_format,
            )
            self.broker.follow(self.relay)  # every commit wakes it
            self.metrics.watch_relay(self.relay.state)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registry)
        if self.config.reflection:
            reflection.enable(registry, SERVICE_NAME, health.SERVICE_NAME)
        self.grpc.add_generic_rpc_handlers([self.wrapper.unknown()])  # asked last

    async def _start_relay(self) -> None:
        """Starts the relay, if any, and warns of a relay not run here for longer than the
        event retention (its unpublished events are kept, so the outbox grows)."""
        positions = await self.database.read(relays.positions)
        latest = (await self.database.read(outbox.history)).latest
        relaying = {self.config.nats_stream} if self.relay is not None else set()
        retention = timedelta(hours=self.config.event_retention_hours)
        warn_if_held_back(positions, relaying, latest, retention)
        if self.relay is not None:
            await self.health.set(RELAY, health_pb2.HealthCheckResponse.SERVING)
            await self.relay.start()

    async def _set_health(self, *, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING
        if not serving:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _follow_database(self) -> None:
        """Health follows the database: NOT_SERVING while it cannot be reached (or does
        not answer), SERVING again as soon as it does, with no restart. A busy database
        (no connection free) changes nothing: it is answering, just not at once."""
        serving = True
        # Longer than a ping's wait for a connection, so that only silence counts.
        patience = self.config.pool_timeout + 1.0
        loop = asyncio.get_running_loop()
        counted = -OUTBOX_COUNT_INTERVAL
        while True:
            await asyncio.sleep(self.config.health_interval)
            if self.relay is not None:
                relay_status = health_pb2.HealthCheckResponse.NOT_SERVING
                if self.relay.state.healthy:
                    relay_status = health_pb2.HealthCheckResponse.SERVING
                await self.health.set(RELAY, relay_status)
            try:
                # The ping reads where the event history stands, for the metrics' lag.
                history = await asyncio.wait_for(self.database.read(outbox.history), patience)
                self.metrics.outbox.newest = history.latest
                if loop.time() - counted >= OUTBOX_COUNT_INTERVAL:
                    counted = loop.time()
                    self.metrics.outbox.events = await self.database.read(outbox.count)
                up = True
            except StoreBusy:
                up = serving
            except Exception as error:
                up = False
                if serving:
                    log.warning("the database does not answer (%s): NOT_SERVING", _why(error))
            if up != serving:
                serving = up
                await self._set_health(serving=up)
                if up:
                    log.warning("the database answers again: SERVING")

    async def _keep_house(self) -> None:
        retention = timedelta(hours=self.config.request_id_retention_hours)
        event_retention = timedelta(hours=self.config.event_retention_hours)
        while True:
            try:
                forgotten = await forget_old_request_ids(self.database, retention)
                if forgotten:
                    log.info("forgot %d request ids older than %s", forgotten, retention)
                pruned = await forget_old_events(self.database, event_retention)
                if pruned:
                    log.info("pruned %d events older than %s", pruned, event_retention)
                if self.config.history_retention_hours > 0:
                    history_retention = timedelta(hours=self.config.history_retention_hours)
                    dropped = await forget_old_history(self.database, history_retention)
                    if dropped:
                        log.info(
                            "dropped %d history entries older than %s", dropped, history_retention
                        )
            except Exception:
                log.exception("housekeeping failed; trying again later")
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first, then in-flight calls get `grace` seconds to finish."""
        for task in (self._housekeeping, self._monitor):
            if task is not None:
                task.cancel()
        await self.health.enter_graceful_shutdown()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.broker.close()  # watchers end now with their tokens, not after the grace
        grace = self.config.grace_period if grace is None else grace
        await asyncio.gather(
            self.grpc.stop(grace), *([self.gateway.stop()] if self.gateway is not None else [])
        )
        await asyncio.to_thread(self.database.close)
        await asyncio.to_thread(self.metrics.stop)
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.stop)
        log.info("stopped", extra={"event": "stopped"})


async def serve(config: Config) -> None:
    server = Server(config)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info(
        "shutting down (grace period %.1fs)",
        config.grace_period,
        extra={"event": "shutting_down", "grace_period": config.grace_period},
    )
    await server.stop()


def _token_like(text: str, *, dots: bool) -> bool:
    tokens = text.split(".") if dots else [text]
    return all(token and not set(token) & set(" \t\r\n*>.") for token in tokens)


def _why(error: Exception) -> str:
    return str(error) or type(error).__name__


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
