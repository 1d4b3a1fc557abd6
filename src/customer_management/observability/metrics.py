"""The Prometheus endpoint (`--metrics-port`): the RPC metrics of api/telemetry.py and
gauges read when scraped, so the service pays nothing for them between scrapes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from customer_management.api.admission import Admission
from customer_management.api.telemetry import RpcMetrics
from customer_management.changes.broker import Broker
from customer_management.changes.relay import RelayState
from customer_management.domain.cache import ResourceCache
from customer_management.store.database import Database


@dataclass
class Outbox:
    """What the health loop last read of the event outbox (every replica's commits)."""

    newest: int = 0
    events: int = 0


class ServiceCollector(Collector):
    def __init__(
        self,
        database: Database,
        broker: Broker,
        outbox: Outbox,
        cache: ResourceCache,
        admission: Admission,
    ) -> None:
        self._database = database
        self._broker = broker
        self._outbox = outbox
        self._cache = cache
        self._admission = admission

    def collect(self) -> Iterator[Metric]:
        load = self._database.load()
        in_use = GaugeMetricFamily(
            "cm_db_connections_in_use", "Database connections doing work now.", labels=["pool"]
        )
        waiting = GaugeMetricFamily(
            "cm_db_requests_waiting",
            "Units of database work waiting for a connection.",
            labels=["pool"],
        )
        for pool in ("read", "write"):
            in_use.add_metric([pool], load.in_use[pool])
            waiting.add_metric([pool], load.waiting[pool])
        yield in_use
        yield waiting
        yield GaugeMetricFamily(
            "cm_watchers", "Open WatchEvents streams.", value=self._broker.watchers
        )
        newest, delivered = self._outbox.newest, self._broker.position
        yield GaugeMetricFamily(
            "cm_events_newest_committed_seq",
            "The newest committed event (by any replica), as last read.",
            value=newest,
        )
        yield GaugeMetricFamily(
            "cm_events_delivered_seq",
            "The newest event this replica has offered to its watchers.",
            value=delivered,
        )
        yield GaugeMetricFamily(
            "cm_event_stream_lag_events",
            "Committed events this replica has not yet offered to its watchers.",
            value=max(0, newest - delivered),
        )
        yield GaugeMetricFamily(
            "cm_outbox_events", "Events kept in the outbox for resuming.", value=self._outbox.events
        )
        yield from self._cache_metrics()
        yield from self._admission_metrics()

    def _cache_metrics(self) -> Iterator[Metric]:
        stats = self._cache.stats()
        for name, text, value in (
            ("cm_cache_hits", "Gets answered from the resource cache.", stats.hits),
            ("cm_cache_misses", "Gets that read the database.", stats.misses),
            ("cm_cache_evictions", "Entries evicted to stay within capacity.", stats.evictions),
        ):
            yield CounterMetricFamily(name, text, value=value)
        for name, text, value in (
            ("cm_cache_entries", "Resources in the cache.", stats.entries),
            ("cm_cache_bytes", "Bytes the cache counts against its capacity.", stats.bytes),
            ("cm_cache_capacity_bytes", "The cache's capacity (--cache-mb).", stats.capacity),
            (
                "cm_cache_fresh",
                "1 while the cache may answer (see --cache-staleness).",
                stats.fresh,
            ),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        lookups = stats.hits + stats.misses
        yield GaugeMetricFamily(
            "cm_cache_hit_ratio",
            "Hits over lookups since the start.",
            value=stats.hits / lookups if lookups else 0.0,
        )

    def _admission_metrics(self) -> Iterator[Metric]:
        limit = GaugeMetricFamily(
            "cm_admission_limit", "Calls of a class admitted at once (adaptive).", labels=["class"]
        )
        in_flight = GaugeMetricFamily(
            "cm_admission_in_flight", "Admitted calls in progress.", labels=["class"]
        )
        rejected = CounterMetricFamily(
            "cm_admission_rejected", "Calls answered RESOURCE_EXHAUSTED at once.", labels=["class"]
        )
        for name, state in self._admission.snapshot().items():
            limit.add_metric([name], state["limit"])
            in_flight.add_metric([name], state["in_flight"])
            rejected.add_metric([name], state["rejected"])
        yield limit
        yield in_flight
        yield rejected


class RelayCollector(Collector):
    """The NATS relay (--publish-nats): its lag as every replica measures it, and what
    this replica relayed."""

    def __init__(self, state: RelayState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state
        yield GaugeMetricFamily(
            "cm_relay_lag_events", "Committed events not yet in the NATS stream.", state.lag_events
        )
        yield GaugeMetricFamily(
            "cm_relay_oldest_unrelayed_age_seconds",
            "Age of the oldest event not yet in the NATS stream (0 when none).",
            value=state.oldest_age,
        )
        yield GaugeMetricFamily(
            "cm_relay_leader", "1 while this replica holds the relay's lease.", int(state.leader)
        )
        yield GaugeMetricFamily(
            "cm_relay_connected",
            "1 while this replica relays and NATS answers.",
            value=int(state.connected),
        )
        yield CounterMetricFamily(
            "cm_relay_published",
            "Events this replica published and NATS acknowledged.",
            value=state.published,
        )


class MetricsEndpoint:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpc = RpcMetrics(self.registry)
        self.outbox = Outbox()
        self.port = 0
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None

    def watch(
        self, database: Database, broker: Broker, cache: ResourceCache, admission: Admission
    ) -> None:
        self.registry.register(ServiceCollector(database, broker, self.outbox, cache, admission))

    def watch_relay(self, state: RelayState) -> None:
        self.registry.register(RelayCollector(state))

    def start(self, host: str, port: int) -> int:
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        self.port = int(self._server.server_port)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
