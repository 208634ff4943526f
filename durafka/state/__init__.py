"""Partition state: one key-value store per input partition, mirrored to the changelog."""
