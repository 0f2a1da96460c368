"""Contracts every layer shares: the event schema, Delta table specs, Kafka topics."""
