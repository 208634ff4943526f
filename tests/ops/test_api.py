"""The HTTP API of ``durafka serve``, called over HTTP against a real broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from durafka.api import ApiTokens, check_exposure
from durafka.errors import ConfigurationError
from durafka.management import Management
from tests.support.api import serving
from tests.support.waiting import wait_until

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    """These tests run on the real broker only (the API adds nothing transport-specific)."""
    return kafka_bootstrap


@pytest.fixture
def base_url(management: Management) -> Iterator[str]:
    tokens = ApiTokens(admin=ADMIN, read=READER)
    with serving(management, tokens, max_request_bytes=4096, sample_seconds=0.2) as url:
        yield url


def client(base_url: str, token: str | None = ADMIN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=60)


def status(http: httpx.Client, iid: str) -> str | None:
    response = http.get(f"/api/instances/{iid}")
    return response.json()["status"] if response.status_code == 200 else None


def test_instances_over_http(base_url: str) -> None:
    iid = "a/1"
    with client(base_url) as http:
        started = http.post(
            "/api/instances",
            json={"name": "approval", "input": {"item": "cup", "quantity": 3}, "instance_id": iid},
        )
        assert started.status_code == 202, started.text
        assert started.json()["instance_id"] == iid  # an id with a slash is one path parameter
        wait_until(lambda: status(http, "a/1") == "RUNNING", timeout=60)

        page = http.get("/api/instances", params={"status": "RUNNING"}).json()
        assert [i["instance_id"] for i in page["items"]] == ["a/1"]
        assert http.get("/api/counts").json()["counts"]["RUNNING"] == 1

        raised = http.post("/api/instances/a/1/events/approve", json={"by": "me"})
        assert raised.status_code == 202, raised.text
        wait_until(lambda: status(http, "a/1") == "COMPLETED", timeout=60)
        view = http.get("/api/instances/a/1/page").json()
        assert view["instance"]["output"]["decision"] == {"by": "me"}
        assert [s["kind"] for s in view["timeline"]] == ["event", "activity"]
        assert http.get("/api/instances/a/1/history").json()[1]["kind"] == "EXECUTION_STARTED"

        restarted = http.post("/api/instances/a/1/restart")
        assert restarted.status_code == 202 and restarted.json()["execution_id"]
        wait_until(lambda: status(http, "a/1") == "RUNNING", timeout=60)
        assert http.post("/api/instances/a/1/suspend", json={"reason": "x"}).status_code == 202
        wait_until(lambda: status(http, "a/1") == "SUSPENDED", timeout=60)
        assert http.post("/api/instances/a/1/resume").status_code == 202
        wait_until(lambda: status(http, "a/1") == "RUNNING", timeout=60)
        assert http.post("/api/instances/a/1/terminate").status_code == 202
        wait_until(lambda: status(http, "a/1") == "TERMINATED", timeout=60)
        assert http.delete("/api/instances/a/1").status_code == 202
        wait_until(lambda: status(http, "a/1") is None, timeout=60)

        # Refusals carry the typed error and a status code that says what kind it is.
        missing = http.post("/api/instances/nope/terminate")
        assert missing.status_code == 404 and missing.json()["error"] == "InstanceNotFoundError"
        unknown = http.post("/api/instances", json={"name": "nope"})
        assert unknown.status_code == 400 and "no orchestration named" in unknown.json()["detail"]
        mistyped = http.post("/api/instances", json={"name": "approval", "input": {"x": 1}})
        assert mistyped.status_code == 400 and mistyped.json()["error"] == "SerializationError"


def test_entities_dead_letters_cluster_and_schema(base_url: str) -> None:
    with client(base_url) as http:
        assert http.post("/api/entities/Counter/k%2F1/signals/add", json=4).status_code == 202
        wait_until(lambda: http.get("/api/entities/Counter/k/1").status_code == 200, timeout=60)
        assert http.get("/api/entities/Counter/k/1").json()["state"] == 4
        assert [e["key"] for e in http.get("/api/entities").json()["items"]] == ["k/1"]
        assert http.delete("/api/entities/Counter/k/1").status_code == 202
        wait_until(lambda: http.get("/api/entities/Counter/k/1").status_code == 404, timeout=60)

        assert http.get("/api/dead-letters").json() == {"items": [], "continuation": None}
        assert http.get("/api/dead-letters/0:0").status_code == 404
        assert http.post("/api/dead-letters/0:0/redrive").json() == {
            "id": "0:0",
            "target": None,
            "refused": "no such dead letter",
        }
        assert http.post("/api/dead-letters/x/redrive").status_code == 400
        assert http.get("/api/quarantined").json() == []
        with client(base_url, READER) as reader:
            assert reader.post("/api/dead-letters/0:0/redrive").status_code == 403

        def sampled() -> bool:
            return len(http.get("/api/throughput").json()) >= 2

        wait_until(sampled, timeout=60, what="two samples of the partitions")
        partitions = http.get("/api/partitions").json()["partitions"]
        assert len(partitions) == 4 + 4  # orchestrations and activities
        assert http.get("/api/topology").json()["in_sync"]

        schema = http.get("/openapi.json").json()
        assert "/api/instances/{instance_id}/terminate" in schema["paths"]
        assert "InstanceDetail" in schema["components"]["schemas"]
        assert "HTTPBearer" in schema["components"]["securitySchemes"]
        page = http.get("/")
        assert page.status_code == 200 and "/static/app.js" in page.text


def test_tokens_roles_and_limits(base_url: str) -> None:
    with client(base_url, token=None) as anonymous:
        assert anonymous.get("/api/instances").status_code == 401
        assert anonymous.get("/").status_code == 200  # the page itself holds no data
    with client(base_url, token="wrong-token-0123456789") as wrong:
        assert wrong.get("/api/instances").status_code == 401
    with client(base_url, token=READER) as reader:
        assert reader.get("/api/instances").status_code == 200
        assert reader.get("/api/whoami").json()["role"] == "read"
        refused = reader.post("/api/instances", json={"name": "hello", "input": "x"})
        assert refused.status_code == 403
        assert reader.get("/api/counts").json()["total"] == 0  # nothing was started
    with client(base_url) as admin:
        big = admin.post("/api/instances", json={"name": "hello", "input": "x" * 5000})
        assert big.status_code == 413

        def chunks() -> Iterator[bytes]:
            yield b'{"name": "hello", "input": "'
            for _ in range(10):
                yield b"x" * 1000  # no Content-Length: counted as it arrives
            yield b'"}'

        streamed = admin.post(
            "/api/instances", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert admin.get("/api/counts").json()["total"] == 0


def test_stream_sends_the_instance_as_it_changes(base_url: str) -> None:
    with client(base_url) as http:
        http.post(
            "/api/instances",
            json={"name": "approval", "input": {"item": "a", "quantity": 1}, "instance_id": "s1"},
        ).raise_for_status()
        wait_until(lambda: status(http, "s1") == "RUNNING", timeout=60)
        seen: list[str] = []
        counts: list[dict[str, int]] = []
        done = threading.Event()

        def listen(path: str, sink: list, event: str, key: str) -> None:  # type: ignore[type-arg]
            with http.stream("GET", path) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                name = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name == event:
                        sink.append(json.loads(line[6:])[key])
                        if done.is_set() or (event == "instance" and sink[-1] == "COMPLETED"):
                            return

        watcher = threading.Thread(
            target=listen, args=("/api/stream?instance_id=s1", seen, "instance", "status")
        )
        counter = threading.Thread(target=listen, args=("/api/stream", counts, "counts", "counts"))
        watcher.start()
        counter.start()
        wait_until(lambda: seen and counts, timeout=30, what="the first events")
        http.post("/api/instances/s1/events/approve", json=True).raise_for_status()
        watcher.join(60)
        assert not watcher.is_alive() and seen[0] == "RUNNING" and seen[-1] == "COMPLETED"
        wait_until(lambda: counts[-1]["COMPLETED"] == 1, timeout=30, what="counts to follow")
        done.set()
        http.post("/api/instances", json={"name": "hello", "input": "x"})  # wakes the stream
        counter.join(60)
        assert not counter.is_alive()


def test_a_server_without_a_token_is_refused_unless_local_and_insecure() -> None:
    with pytest.raises(ConfigurationError, match="DURAFKA_API_TOKEN"):
        check_exposure(ApiTokens(), "127.0.0.1")
    with pytest.raises(ConfigurationError, match=r"only on 127\.0\.0\.1"):
        check_exposure(ApiTokens(insecure_local=True), "0.0.0.0")
    check_exposure(ApiTokens(insecure_local=True), "127.0.0.1")
    check_exposure(ApiTokens(admin=ADMIN), "0.0.0.0")
    assert ApiTokens(insecure_local=True).role_of(None) == "admin"
    assert ApiTokens(admin=ADMIN, insecure_local=True).role_of(None) is None


def test_repairs_over_http(base_url: str) -> None:
    with client(base_url) as http:
        assert http.post(
            "/api/instances", json={"name": "failing", "input": "boom", "instance_id": "f/1"}
        ).is_success
        wait_until(lambda: status(http, "f/1") == "FAILED", timeout=60)
        # Looking back: the instance as it was a moment after the failure.
        after = http.get("/api/instances/f/1").json()["last_updated_at"]
        past = http.get("/api/instances/f/1/at", params={"time": after})
        assert past.status_code == 200, past.text
        assert past.json()["instance"]["status"] == "FAILED"

        rewound = http.post("/api/instances/f/1/rewind", json={"reason": "try again"})
        assert rewound.status_code == 202, rewound.text
        # The activity always fails: the rewind runs it again and the instance fails again.
        wait_until(
            lambda: (
                sum(
                    e["kind"] == "TASK_FAILED"
                    for e in http.get("/api/instances/f/1/history").json()
                )
                == 2
            ),
            timeout=60,
        )
        wait_until(lambda: status(http, "f/1") == "FAILED", timeout=60)

        refused = http.post("/api/instances/f/1/reset", json={"to_event": 999})
        assert refused.status_code == 409 and "choose an index" in refused.text
        reset = http.post("/api/instances/f/1/reset", json={"to_event": 2, "reason": "again"})
        assert reset.status_code == 202, reset.text
        assert reset.json()["execution_id"]
        assert http.post("/api/instances/nope/rewind").status_code == 404
