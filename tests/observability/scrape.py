"""Reading a role's /metrics, /healthz and /readyz over HTTP, as Prometheus and Kubernetes do."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Metrics", "probe", "scrape", "wait_for"]


class Metrics:
    """One scrape: every sample by name and labels.

    Example:
        >>> m = scrape(port)
        >>> m.value("durafka_orchestrations_started_total", orchestration="greeting")
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 when absent, as a counter not yet counted)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample of ``name``, by its labels."""
        return {labels: v for (n, labels), v in self.samples.items() if n == name}

    def total(self, name: str) -> float:
        """The sum of every sample of ``name``."""
        return sum(self.series(name).values())


def scrape(port: int) -> Metrics:
    """GET ``/metrics`` (it must answer 200 in the Prometheus text format)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return Metrics(response.read().decode())


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET a probe (``/healthz``, ``/readyz``): the status code and the JSON body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
