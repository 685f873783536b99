"""The HTTP collector: POST /v1/events -> contract -> pseudonymize -> Kafka (or the DLQ)."""

from shoplake.collector.app import create_app

__all__ = ["create_app"]
