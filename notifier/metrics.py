"""Prometheus metrics of one notifier process (its own registry: several apps may share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("rowcast_connections", "Open client connections", ["transport"], registry=r)
        self.subscriptions = Gauge("rowcast_subscriptions", "Active subscriptions", registry=r)
        self.events_in = Counter("rowcast_events_in", "Change events received from Postgres", registry=r)
        self.messages_out = Counter(
            "rowcast_messages_out", "Frames written to clients", ["transport"], registry=r
        )
        self.drops = Counter(
            "rowcast_slow_consumer_drops", "Clients closed for overflowing their queue", registry=r
        )
        self.reconnects = Counter(
            "rowcast_listener_reconnects", "LISTEN connection re-establishments", registry=r
        )
        self.failures = Counter(
            "rowcast_listener_failures",
            "Failures of the reader's parts (wakeups, reader, fanout), each followed by a restart",
            ["part"],
            registry=r,
        )
        self.wakeups = Counter(
            "rowcast_wakeups", "Notifications received (data-free hints; forged ones count too)", registry=r
        )
        self.reads = Counter("rowcast_log_reads", "Window reads of the change log", registry=r)
        self.replayed = Counter(
            "rowcast_replayed_events", "Events served from the change log on resume", registry=r
        )
        self.lag = Histogram(
            "rowcast_event_lag_seconds",
            "Time from the change in Postgres to the notifier receiving it",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.queue_usage = Gauge(
            "rowcast_pg_notification_queue_usage", "pg_notification_queue_usage() (0..1)", registry=r
        )
        self.listening = Gauge(
            "rowcast_listening", "1 while wake-ups arrive and the change log can be read", registry=r
        )
        # Set from the clock at every scrape (notifier/status.py): grows while reads stall.
        self.last_read_age = Gauge(
            "rowcast_last_read_age_seconds",
            "Seconds since the last successful read of the change log",
            registry=r,
        )
        self.log_bytes = Gauge(
            "rowcast_log_bytes", "pg_total_relation_size of rowcast.changes (table and indexes)", registry=r
        )
        self.log_oldest_age = Gauge(
            "rowcast_log_oldest_age_seconds", "Age of the oldest change in the log (0 when empty)", registry=r
        )
        self.retention = Gauge(
            "rowcast_retention_seconds", "This notifier's retention setting (ROWCAST_RETENTION)", registry=r
        )

        # Every labelled series exists from the start (at 0): an alert or a dashboard panel on
        # rate(rowcast_listener_failures_total[5m]) sees 0, not "no data", until the first failure.
        for transport in ("ws", "sse", "longpoll"):
            self.connections.labels(transport)
            self.messages_out.labels(transport)
        for part in ("wakeups", "reader", "fanout"):
            self.failures.labels(part)

    def render(self) -> bytes:
        return generate_latest(self.registry)
