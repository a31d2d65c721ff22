"""The live demo, and the one launcher of a local Kafka-protocol broker that the demo, benchmarks and tests share."""
