"""The replay engine: history events, durable tasks, the orchestration context and executor."""
