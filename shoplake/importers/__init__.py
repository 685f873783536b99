"""Importers for history that is not in Kafka: a file export mapped onto the contracts, landed in bronze."""
