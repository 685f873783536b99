"""Bytewax dataflows of the speed layer (Kafka -> live metrics, sessions, alerts)."""
