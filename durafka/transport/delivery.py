"""Producing client records and waiting until the broker acknowledged them.

The clients write one record per call (a start, an event, a signal) and return
only once it is durably written: :func:`send_and_flush` does it blocking,
:class:`DeliveryPump` for asyncio code, with a thread serving the producer's
delivery reports so that ``produce()`` never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from durafka.errors import TransportError
from durafka.transport.base import OutgoingRecord, Producer

__all__ = ["DELIVERY_TIMEOUT", "DeliveryPump", "send_and_flush"]

#: Seconds to wait for the broker to acknowledge a record before giving up.
DELIVERY_TIMEOUT = 30.0


def send_and_flush(
    producer: Producer, records: Sequence[OutgoingRecord], timeout: float = DELIVERY_TIMEOUT
) -> None:
    """Produce ``records`` and wait until the broker acknowledged every one (one flush).

    Raises:
        TransportError: a record failed, or was not acknowledged within ``timeout``
            seconds (it may or may not have been written).
    """
    if not records:
        return
    acked: list[OutgoingRecord] = []
    failure: list[tuple[OutgoingRecord, Any]] = []

    def on_delivery_of(out: OutgoingRecord) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, _record: Any) -> None:
            if err is not None:
                failure.append((out, err))
            acked.append(out)

        return on_delivery

    for out in records:
        producer.produce(
            out.topic, out.partition, out.key, out.value, on_delivery=on_delivery_of(out)
        )
    producer.flush(timeout)
    if failure:
        out, err = failure[0]
        raise TransportError(f"writing to {out.topic}[{out.partition}] failed: {err}")
    if len(acked) < len(records):
        out = records[-1]
        raise TransportError(
            f"the broker did not acknowledge {len(records) - len(acked)} of {len(records)} "
            f"records to {out.topic} within {timeout}s; they may or may not have been written"
        )


_Report = tuple["asyncio.Future[None]", OutgoingRecord, Any]


class DeliveryPump:
    """Serves a producer's delivery reports on a thread; settles futures in batches.

    ``produce()`` never blocks the event loop; this thread polls the producer,
    collects the reports of a poll and hands them to the loop in one
    ``call_soon_threadsafe`` (a thread hop per poll, not per record or per call).

    Args:
        producer: the producer to serve (its reports are this pump's alone).
        loop: the event loop whose futures :meth:`send_all` settles.
    """

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop) -> None:
        self._producer = producer
        self._loop = loop
        self._reports: deque[_Report] = deque()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="durafka-client-delivery", daemon=True
        )
        self._thread.start()

    async def send_all(
        self, records: Sequence[OutgoingRecord], timeout: float = DELIVERY_TIMEOUT
    ) -> None:
        """Produce ``records`` and wait until the broker acknowledged each of them.

        Raises:
            TransportError: a record failed, or was not acknowledged within ``timeout``.
        """
        loop, producer = self._loop, self._producer
        report = self._reports.append  # deque.append is atomic: no lock needed
        futures: list[asyncio.Future[None]] = []
        for out in records:
            delivered: asyncio.Future[None] = loop.create_future()
            futures.append(delivered)
            producer.produce(
                out.topic,
                out.partition,
                out.key,
                out.value,
                on_delivery=_reporter(report, delivered, out),
            )
        if not futures:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout=timeout)
        except TimeoutError:
            out = records[-1]
            raise TransportError(
                f"the broker did not acknowledge {sum(not f.done() for f in futures)} of "
                f"{len(records)} records to {out.topic} within {timeout}s; they may "
                "or may not have been written"
            ) from None

    def _run(self) -> None:
        reports = self._reports
        while not self._stopped.is_set():
            try:
                self._producer.poll(0.05)
            except Exception:  # a closed producer: the client is closing
                return
            if reports:
                batch = []
                while reports:
                    batch.append(reports.popleft())
                try:
                    self._loop.call_soon_threadsafe(_settle, batch)
                except RuntimeError:  # the loop is closed
                    return

    def stop(self) -> None:
        """Stop polling (the producer's close delivers what is left)."""
        self._stopped.set()
        self._thread.join(5.0)


def _reporter(
    report: Callable[[_Report], None],
    future: asyncio.Future[None],
    out: OutgoingRecord,
) -> Callable[[Any, Any], None]:
    def on_delivery(err: Any, _record: Any) -> None:
        report((future, out, err))

    return on_delivery


def _settle(batch: list[_Report]) -> None:
    for future, out, err in batch:
        if future.done():  # cancelled by its caller
            continue
        if err is None:
            future.set_result(None)
        else:
            future.set_exception(
                TransportError(f"writing to {out.topic}[{out.partition}] failed: {err}")
            )
