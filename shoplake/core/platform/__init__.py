"""Local infrastructure shoplake provisions itself: a KRaft Kafka broker and a PostgreSQL cluster."""
