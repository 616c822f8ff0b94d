"""Webhook metrics, beside pairgate's others in the same registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from domain.application.webhooks import Delivery


class WebhookMetrics:
    """dispatch.DeliveryObserver, and the lag the outbox's follower reports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "pairgate_webhook_deliveries",
            "Webhook deliveries a receiver took (2xx).",
            registry=registry,
        )
        self.failures = Counter(
            "pairgate_webhook_failures",
            "Webhook attempts that failed (any reason).",
            registry=registry,
        )
        self.retries = Counter(
            "pairgate_webhook_retries",
            "Failed webhook attempts that will be tried again.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "pairgate_webhook_dead_letters",
            "Webhook deliveries given up after retrying (see GET /api/dead-letters).",
            registry=registry,
        )
        self.lag = Gauge(
            "pairgate_webhook_lag_events",
            "Recorded events the webhooks' outbox has not yet taken from the log.",
            registry=registry,
        )
        self.backlog = Gauge(
            "pairgate_webhook_backlog",
            "Webhook deliveries waiting to be sent.",
            registry=registry,
        )

    def delivered(self, delivery: Delivery) -> None:
        self.deliveries.inc()

    def failed(self, delivery: Delivery) -> None:
        self.failures.inc()
        if delivery.dead:
            self.dead_letters.inc()
        else:
            self.retries.inc()
