"""Codecs: Avro single-object encoding for records (``avro``), JSON for user payloads (``payload``)."""
