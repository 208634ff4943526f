"""Development tooling, not the runtime API: a local Kafka broker for development and tests."""
