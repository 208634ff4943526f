"""`durafka serve` as a newcomer runs it: refused without a token, served with --insecure-local."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import httpx

from tests.support.processes import REPO_ROOT
from tests.support.waiting import wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(kafka_bootstrap: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURAFKA_API")}
    env["DURAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    return subprocess.Popen(
        [sys.executable, "-m", "durafka.cli", "serve", "examples.hello:app", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_refuses_without_a_token_and_serves_locally_when_told(kafka_bootstrap: str) -> None:
    hub = f"t{uuid.uuid4().hex[:8]}"
    refused = _serve(kafka_bootstrap, "--hub", hub)
    output, _ = refused.communicate(timeout=60)
    assert refused.returncode == 1
    assert "DURAFKA_API_TOKEN" in output and "--insecure-local" in output

    port = _free_port()
    server = _serve(kafka_bootstrap, "--hub", hub, "--insecure-local", "--port", str(port))
    try:

        def whoami() -> dict[str, object] | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/whoami", timeout=5).json()
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                return None

        found = wait_until(whoami, timeout=60, what="durafka serve to answer")
        assert found["task_hub"] == hub and found["role"] == "admin"
        assert found["orchestrations"] == {"hello_world": 0}
        started = httpx.post(
            f"http://127.0.0.1:{port}/api/instances",
            json={"name": "hello_world", "input": "World"},
            timeout=30,
        )
        assert started.status_code == 202, started.text
    finally:
        server.terminate()
        server.wait(30)
