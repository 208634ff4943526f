"""Helpers shared by the test suite (broker acquisition, Kafka clients)."""
