"""No record can exceed Kafka's record size limit, and no refused record wedges a partition.

Issue 11, case 1 (and case 7's second half): a batch's history chunk, an instance
header, a status record, an entity's record or a failure's details over the
producer's ``message.max.bytes`` were refused, the transaction aborted and the
batch was retried forever; every instance behind it on the partition stopped.
Now history is split into chunks, an instance that cannot fit fails with the
sizes in its reason, an entity operation that would not fit is rejected, and a
record the broker refuses anyway fails the instance that made it.

Most tests run the processor with ``message.max.bytes`` = 200,000 (the
``producer.`` client setting) and a client with Kafka's defaults: payloads the
client accepts then make records the processor cannot write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

import durafka
from durafka import EntityId, OrchestrationContext, RuntimeStatus
from durafka.client import Client
from durafka.codec.payload import MAX_CUSTOM_STATUS_BYTES
from durafka.codec.records import decode_message
from durafka.errors import MAX_FAILURE_MESSAGE_CHARS, RecordTooLargeError
from durafka.topology import HubTopics, partition_for
from tests.support.apps import make_app
from tests.support.dead_letters import read_dead_letters
from tests.support.foreign import ids_on, produce_raw, start_message
from tests.support.kafka import admin_client
from tests.support.waiting import wait_until

#: The processor's producer limit in most tests here.
SMALL_LIMIT = 200_000

app = durafka.App()


@app.activity
def length(text: str) -> int:
    return len(text)


@app.activity
def say_hello(name: str) -> str:
    return f"Hello, {name}!"


@app.activity
def fails_verbosely(size: int) -> None:
    raise ValueError("x" * size)


@app.activity
def grow(n: int) -> str:
    return "g" * n


@app.orchestration
async def hello(ctx: OrchestrationContext, name: str) -> str:
    return await ctx.call_activity(say_hello, name)


@app.orchestration
async def grows(ctx: OrchestrationContext, n: int) -> str:
    return await ctx.call_activity(grow, n)


@app.orchestration
async def fan_out(ctx: OrchestrationContext, n: int) -> int:
    # 100-byte inputs, as in the measurement.
    tasks = [ctx.call_activity(length, f"{i:0100d}") for i in range(n)]
    return sum(await ctx.when_all(tasks))


@app.orchestration
async def waits_for_event(ctx: OrchestrationContext) -> int:
    data: str = await ctx.wait_for_external_event("data")
    return len(data)


@app.orchestration
async def echoes(ctx: OrchestrationContext, text: str) -> str:
    ctx.set_custom_status("s" * 40_000)
    return text + "!"


@app.orchestration
async def custom_status(ctx: OrchestrationContext, size: int) -> str:
    try:
        ctx.set_custom_status("s" * size)
    except durafka.PayloadTooLargeError as exc:
        return str(exc)
    return "set"


@app.orchestration
async def catches_activity_failure(ctx: OrchestrationContext, size: int) -> str:
    try:
        await ctx.call_activity(fails_verbosely, size)
    except durafka.ActivityFailed as exc:
        return exc.details.message
    return "no failure"


@app.orchestration
async def calls_length(ctx: OrchestrationContext, text: str) -> int:
    return await ctx.call_activity(length, text)


class Bag(durafka.Entity[str]):
    """An entity whose state grows by what it is given."""

    def put(self, text: str) -> int:
        self.state += text
        return len(self.state)


class Relay(durafka.Entity[int]):
    """An entity that signals a Bag."""

    def forward(self, n: int) -> None:
        self.state += 1
        self.signal_entity(EntityId("Bag", self.entity_id.key), "put", "r" * n)


app.entity(Bag)
app.entity(Relay)


@app.orchestration
async def fills_bag(ctx: OrchestrationContext, chunk: int) -> list[str]:
    bag = EntityId("Bag", ctx.instance_id)
    outcomes: list[str] = []
    for _ in range(2):
        try:
            outcomes.append(str(await ctx.call_entity(bag, "put", "b" * chunk)))
        except durafka.EntityOperationFailed as exc:
            outcomes.append(exc.details.message)
    return outcomes


Limited = Callable[..., AbstractContextManager[Client]]


@pytest.fixture
def limited(app_factory: Callable[..., durafka.App]) -> Limited:
    """Runs a processor and worker whose producers take records of ``limit`` bytes at
    most (SMALL_LIMIT unless told; None: Kafka's defaults); yields a client with
    Kafka's default limits on the same task hub."""

    @contextmanager
    def run(limit: int | None = SMALL_LIMIT, **overrides: object) -> Iterator[Client]:
        if limit is not None:
            overrides["client_config"] = {"producer.message.max.bytes": str(limit)}
        roles = app_factory(registry=app.registry, **overrides)
        caller = app_factory(registry=app.registry)
        roles.ensure_topics()
        with roles.running(), caller.sync_client() as client:
            client.app = caller  # type: ignore[attr-defined]
            yield client

    return run


def _reaches(client: Client, iid: str, runtime: RuntimeStatus) -> None:
    def seen() -> bool:
        status = client.get_status(iid)
        return status is not None and status.runtime_status is runtime

    wait_until(seen, timeout=60, what=f"{iid} {runtime.value}")


def _failed(client: Client, iid: str) -> durafka.OrchestrationStatus:
    status = client.wait_for_status(iid, timeout=90)
    assert status.runtime_status is RuntimeStatus.FAILED, status
    return status


def _failed_too_large(client: Client, iid: str) -> durafka.FailureDetails:
    """The failure of ``iid`` once it FAILED for size; its partition went on."""
    status = _failed(client, iid)
    _partition_goes_on(client, iid)
    failure = status.failure_details
    assert failure is not None and failure.is_caused_by(RecordTooLargeError), failure
    return failure


def _partition_goes_on(client: Client, bad_id: str, partitions: int = 4) -> None:
    """Instances on ``bad_id``'s partition, started after it, complete."""
    partition = partition_for(bad_id.encode(), partitions)
    for iid in ids_on(partition, partitions, "after-" + bad_id.replace("@", ""), 2):
        client.start_new(hello, iid, instance_id=iid)
        assert client.wait_for_completion(iid, timeout=60) == f"Hello, {iid}!"


def test_a_fan_out_of_20000_activities_completes(limited: Limited) -> None:
    # Through H.activities (no local activities): 20,000 task records in one transaction,
    # a history of ~2.5 MB for the scheduling step alone (three chunks).
    with limited(None, local_activities=False) as client:
        client.start_new(fan_out, 20_000, instance_id="fan")
        assert client.wait_for_completion("fan", timeout=300) == 20_000 * 100
        history = client.get_history("fan")
    scheduled = [e for e in history if e.kind.value == "TASK_SCHEDULED"]
    assert len(scheduled) == 20_000
    assert [e.seq for e in scheduled] == list(range(20_000))


def test_a_history_split_into_chunks_replays_from_the_store(
    limited: Limited,
) -> None:
    # ~400 KB of history per step at a 200 KB limit; no cache: every step replays the
    # chunks from the store.
    with limited(cache_size=0) as client:
        client.start_new(fan_out, 3_000, instance_id="chunked")
        assert client.wait_for_completion("chunked", timeout=120) == 3_000 * 100


def test_an_event_larger_than_a_record_fails_the_instance_and_the_partition_goes_on(
    limited: Limited,
) -> None:
    with limited() as client:
        client.start_new(waits_for_event, instance_id="big-event")
        _reaches(client, "big-event", RuntimeStatus.RUNNING)
        client.raise_event("big-event", "data", "e" * 300_000)
        failure = _failed_too_large(client, "big-event")
    assert failure.message.startswith("history too large: instance 'big-event'")
    assert "EVENT_RAISED 'data' event" in failure.message
    assert "300,0" in failure.message  # its size, and the limit
    assert "bytes a history record may hold" in failure.message


def test_events_held_while_suspended_fail_the_instance_when_its_header_is_full(
    limited: Limited,
) -> None:
    with limited() as client:
        client.start_new(waits_for_event, instance_id="held")
        _reaches(client, "held", RuntimeStatus.RUNNING)
        client.suspend("held")
        _reaches(client, "held", RuntimeStatus.SUSPENDED)
        for _ in range(3):  # each fits a record; together they do not fit the header
            client.raise_event("held", "other", "h" * 90_000)
        failure = _failed_too_large(client, "held")
    assert failure.message.startswith("instance state too large: the header of instance 'held'")
    assert "3 events held back" in failure.message


def test_a_status_over_the_limit_fails_the_instance_with_a_status_cut_to_fit(
    limited: Limited,
) -> None:
    with limited() as client:
        # input 90 KB + output 90 KB + custom status 40 KB: the COMPLETED status cannot fit.
        client.start_new(echoes, "i" * 90_000, instance_id="big-output")
        # input 170 KB + custom status 40 KB: no status fits, the failed one without the
        # custom status does.
        client.start_new(echoes, "i" * 170_000, instance_id="big-input")
        output = _failed(client, "big-output")
        input_ = _failed(client, "big-input")
        _partition_goes_on(client, "big-output")
    failure = output.failure_details
    assert failure is not None and failure.is_caused_by(RecordTooLargeError)
    assert failure.message.startswith("status too large: the COMPLETED status of instance")
    assert "input 90,002, output 90,003, custom status 40,002" in failure.message
    assert output.serialized_output is None
    assert output.serialized_custom_status is not None  # the failed status fits with it
    failure = input_.failure_details
    assert failure is not None and failure.message.startswith("status too large: the ")
    assert "leaves out its custom status of 40,002 bytes" in failure.message
    assert input_.serialized_custom_status is None
    assert input_.serialized_input is not None and len(input_.serialized_input) == 170_002


def test_a_record_no_other_check_catches_is_refused_before_it_is_produced(
    limited: Limited,
) -> None:
    # An entity's signal under max_payload_bytes but over the processor's record limit:
    # nothing checks it on its way, the checkpoint refuses it, and the batch processed
    # again dead-letters the entity's input instead of applying it.
    relay = EntityId("Relay", "r")
    with limited() as client:
        client.signal_entity(relay, "forward", 1)
        _wait_for_entity(client, relay, lambda state: state == 1)
        client.signal_entity(relay, "forward", 250_000)
        _partition_goes_on(client, str(relay))
        client.signal_entity(relay, "forward", 2)
        _wait_for_entity(client, relay, lambda state: state == 2)
        caller: durafka.App = client.app  # type: ignore[attr-defined]
        letters = read_dead_letters(caller.transport, caller.settings.task_hub)
    [letter] = letters
    assert letter["reason"].startswith("the records of '@Relay@r' cannot be written: a record of")
    assert "200,000-byte record size limit" in letter["reason"]
    assert decode_message(letter["value"])[1].payload == b"250000"


def test_a_misplaced_record_whose_forward_is_refused_is_dead_lettered(limited: Limited) -> None:
    # Another service's start, larger than the processor's record limit, on the wrong
    # partition: its forward is refused by the checkpoint, and the batch processed
    # again dead-letters it (the one way a source record is dead-lettered: Rejects).
    iid = "misplaced-large"
    wrong = (partition_for(iid.encode(), 4) + 1) % 4
    with limited() as client:
        caller: durafka.App = client.app  # type: ignore[attr-defined]
        orchestrations = HubTopics(caller.settings.task_hub).orchestrations
        value = start_message(iid, "hello", json.dumps("x" * 250_000).encode())
        offset = produce_raw(caller, orchestrations, wrong, iid.encode(), value)
        for other in ids_on(wrong, 4, "after-misplaced", 2):
            client.start_new(hello, other, instance_id=other)
            assert client.wait_for_completion(other, timeout=60) == f"Hello, {other}!"
        letters = read_dead_letters(caller.transport, caller.settings.task_hub)
        assert client.get_status(iid) is None  # it never ran anywhere
    [letter] = letters
    assert (letter["source_partition"], letter["source_offset"]) == (wrong, offset)
    assert letter["reason"].startswith(
        f"cannot be forwarded to partition {partition_for(iid.encode(), 4)}: a record of"
    )
    assert "200,000-byte record size limit" in letter["reason"]


def test_an_entity_operation_that_would_not_fit_is_rejected_and_rolled_back(
    limited: Limited,
) -> None:
    with limited() as client:
        client.start_new(fills_bag, 100_000, instance_id="filler")
        first, second = client.wait_for_completion("filler", timeout=60)
        bag = client.get_entity(EntityId("Bag", "filler"))
        # A signal that would not fit fails like any signal: counted, reason kept.
        client.signal_entity(EntityId("Bag", "filler"), "put", "c" * 100_000)
        client.signal_entity(EntityId("Bag", "filler"), "put", "d")
        after = _wait_for_entity(
            client, EntityId("Bag", "filler"), lambda state: len(state) == 100_001
        )
    assert first == "100000"
    assert second.startswith("operation 'put' would make entity @Bag@filler too large")
    assert "with the new state of 200,002 bytes" in second
    assert "the operation was rolled back" in second
    assert bag is not None and bag.state == "b" * 100_000
    assert after.error_count == 2 and after.last_error is not None  # the call's, the signal's
    assert "would make entity @Bag@filler too large" in after.last_error.message


def _wait_for_entity(
    client: Client, entity: EntityId, check: Callable[[Any], bool]
) -> durafka.EntityMetadata:
    def seen() -> durafka.EntityMetadata | None:
        meta = client.get_entity(entity)
        return meta if meta is not None and check(meta.state) else None

    return wait_until(seen, timeout=60, what=f"entity {entity}")


def test_failure_details_are_cut_where_they_are_made(limited: Limited) -> None:
    # A 2 MB exception message: its TASK_FAILED record used to fail every transaction
    # of the worker (the activity ran again and again).
    with limited(None) as client:
        client.start_new(catches_activity_failure, 2_000_000, instance_id="verbose")
        message = client.wait_for_completion("verbose", timeout=60)
    assert len(message) == MAX_FAILURE_MESSAGE_CHARS
    assert message.endswith(" more characters cut by durafka]")


def test_custom_status_has_its_limit_checked_where_it_is_set(limited: Limited) -> None:
    with limited(None) as client:
        client.start_new(custom_status, MAX_CUSTOM_STATUS_BYTES, instance_id="too-much")
        client.start_new(custom_status, MAX_CUSTOM_STATUS_BYTES - 2, instance_id="just-fits")
        too_much = client.wait_for_completion("too-much", timeout=60)
        assert client.wait_for_completion("just-fits", timeout=60) == "set"
    assert too_much.startswith("the custom status is 65,538 bytes, over its limit of 65,536")


def test_a_record_the_broker_refuses_fails_its_instance_not_the_partition(
    kafka_bootstrap: str, hub: str, tmp_path: Path
) -> None:
    # The topic's limit was lowered on the broker behind durafka's back: the status
    # record passes every check here and is refused at delivery (MSG_SIZE_TOO_LARGE).
    roles = make_app(kafka_bootstrap, hub, tmp_path / "state", app.registry)
    roles.ensure_topics()
    _lower_topic_limit(kafka_bootstrap, f"{hub}.status", 20_000)
    try:
        with roles.running(), roles.sync_client() as client:
            client.start_new(grows, 30_000, instance_id="refused")
            status = _failed(client, "refused")
            _partition_goes_on(client, "refused")
    finally:
        roles.close()
    failure = status.failure_details
    assert failure is not None and failure.is_caused_by(RecordTooLargeError)
    assert "refused a record of" in failure.message and "MSG_SIZE_TOO_LARGE" in failure.message
    assert status.serialized_input == b"30000"  # the failed status fits the lowered limit


def _lower_topic_limit(bootstrap: str, topic: str, limit: int) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(
                "max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET
            )
        ],
    )
    admin = admin_client(bootstrap)  # kept alive until the change is done
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
