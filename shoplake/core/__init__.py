"""The foundation: contracts, settings, personal data, the shared rules, lake and Kafka I/O.

Nothing here imports Dagster, Bytewax or any other part of shoplake (make lint checks it).
"""
