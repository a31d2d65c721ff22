"""The streaming shell: Faust agents on Kafka around the pure core (ingest -> summaries -> evaluation)."""
