"""The import DSL: a YAML mapping turns a shop export into contract events (no lake, no Kafka)."""
