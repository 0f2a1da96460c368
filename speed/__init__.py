"""The speed layer: Spark Structured Streaming jobs over Kafka, and the Kafka source they read through."""
