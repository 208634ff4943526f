"""Refresh the bytes and fingerprints in docs/topics.md after a schema change.

``python -m tests.docs.regenerate`` re-encodes every ``record=NAME`` example into
its ``bytes=NAME`` block and rewrites the ``fingerprints`` table from the current
schemas; review the diff (sizes quoted in prose, e.g. the dead letter's
``value_size``, are checked by tests/docs/test_topics_md.py but not rewritten).
"""

from __future__ import annotations

import re
from pathlib import Path

from durafka.codec.avro import codec
from tests.docs import test_topics_md as doc_test


def _hex_block(data: bytes) -> str:
    parts = data.hex(" ").split(" ")
    return "\n".join(" ".join(parts[i : i + 16]) for i in range(0, len(parts), 16)) + "\n"


def _fingerprints(match: re.Match[str]) -> str:
    lines = []
    for line in match.group(2).splitlines():
        short = line.split()[0]
        fingerprint = codec(short).fingerprint.to_bytes(8, "little").hex(" ")
        lines.append(f"{short:<22}{fingerprint}")
    return match.group(1) + "\n".join(lines) + "\n" + match.group(3)


def regenerate(doc: Path = doc_test.DOC) -> None:
    """Rewrite the generated blocks of ``doc`` in place."""
    text = doc.read_text()
    for name in doc_test.ENCODED:
        record, value = doc_test.documented(name)
        block = _hex_block(doc_test.encode(record, value))
        pattern = "(```text bytes=" + re.escape(name) + r"\n)(.*?)(```)"
        text = re.sub(pattern, lambda m, b=block: m.group(1) + b + m.group(3), text, flags=re.S)
    text = re.sub(r"(```text fingerprints\n)(.*?)(```)", _fingerprints, text, flags=re.S)
    doc.write_text(text)


if __name__ == "__main__":
    regenerate()
