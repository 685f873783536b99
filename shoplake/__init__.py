"""shoplake: e-commerce behaviour data from collector to Kafka to a Dagster lake."""

__version__ = "0.1.0"
