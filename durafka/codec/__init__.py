"""Codecs: Avro single-object encoding of records (``avro``), JSON user payloads (``payload``)."""
