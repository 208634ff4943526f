"""The App: registration of functions and entities, runners and clients of one task hub."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, overload

from durafka.hosting import CleanExitMarker, Runner
from durafka.registry import Registry
from durafka.settings import Settings
from durafka.state.base import StoreFactory

if TYPE_CHECKING:
    from durafka.activities.worker import ActivityWorker
    from durafka.client import AsyncClient, Client
    from durafka.processor import Processor
    from durafka.transport import Transport

log = logging.getLogger("durafka.app")

#: After an unclean exit, activities do not run next to the processor for this long.
LOCAL_ACTIVITY_PAUSE_S = 600.0

F = TypeVar("F", bound=Callable[..., Any])
# An Entity subclass (callable: its constructor) or an entity function.
E = TypeVar("E", bound=Callable[..., Any])


class App:
    """A durafka application: one task hub, its functions, and how to run them.

    Args:
        task_hub: the topic prefix (overrides ``DURAFKA_TASK_HUB``).
        settings: full settings; otherwise read from ``DURAFKA_*`` and ``overrides``.
        **overrides: any :class:`~durafka.settings.Settings` field.

    Example:
        >>> app = durafka.App("hello")
        >>> @app.activity
        ... def say_hello(name: str) -> str:
        ...     return f"Hello, {name}!"
        >>> @app.orchestration
        ... async def hello_world(ctx: durafka.OrchestrationContext, name: str) -> str:
        ...     return await ctx.call_activity(say_hello, name)
        >>> async with app.run():
        ...     client = app.client()
        ...     instance_id = await client.start_new(hello_world, "World")
        ...     print(await client.wait_for_completion(instance_id))
    """

    def __init__(
        self, task_hub: str | None = None, *, settings: Settings | None = None, **overrides: Any
    ) -> None:
        if settings is None:
            if task_hub is not None:
                overrides["task_hub"] = task_hub
            settings = Settings(**overrides)
        elif task_hub is not None or overrides:
            settings = settings.model_copy(
                update={**overrides, **({"task_hub": task_hub} if task_hub else {})}
            )
        self.settings = settings
        self.registry = Registry()
        self._transport: Transport | None = None
        self._store_factory: StoreFactory | None = None
        self._topics_ready = False
        self._id_locks: list[int] = []

    # -- registration ---------------------------------------------------------------

    @overload
    def orchestration(self, fn: F) -> F: ...
    @overload
    def orchestration(
        self, *, name: str | None = None, version: str | None = None
    ) -> Callable[[F], F]: ...

    def orchestration(
        self, fn: F | None = None, *, name: str | None = None, version: str | None = None
    ) -> F | Callable[[F], F]:
        """Register an ``async def orchestrator(ctx, input)``; bare or with ``name=``/``version=``.

        Versions let a changed orchestrator run beside the old one: new executions
        start on the latest version, running ones keep theirs (keep the old code
        registered until they have finished; ``durafka replay-check`` shows them).

        Example:
            >>> @app.orchestration(name="order", version="1")
            ... async def order_v1(ctx, order): ...
            >>> @app.orchestration(name="order", version="2")
            ... async def order_v2(ctx, order): ...
        """

        def register(f: F) -> F:
            d = self.registry.add_orchestration(f, name, version)
            f.__durafka_name__ = d.name  # type: ignore[attr-defined]
            return f

        return register(fn) if fn is not None else register

    @overload
    def activity(self, fn: F) -> F: ...
    @overload
    def activity(self, *, name: str | None = None) -> Callable[[F], F]: ...

    def activity(self, fn: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
        """Register an activity (``def`` or ``async def``, one input); bare or with ``name=``."""

        def register(f: F) -> F:
            d = self.registry.add_activity(f, name)
            f.__durafka_name__ = d.name  # type: ignore[attr-defined]
            return f

        return register(fn) if fn is not None else register

    @overload
    def entity(self, target: E) -> E: ...
    @overload
    def entity(self, *, name: str | None = None) -> Callable[[E], E]: ...

    def entity(self, target: E | None = None, *, name: str | None = None) -> E | Callable[[E], E]:
        """Register an entity: a :class:`~durafka.Entity` subclass or a ``def entity(ctx)``.

        Usable bare or with ``name=`` (default: the class or function name).

        Example:
            >>> @app.entity
            ... class Counter(durafka.Entity[int]):
            ...     def add(self, amount: int) -> None:
            ...         self.state += amount
        """

        def register(t: E) -> E:
            d = self.registry.add_entity(t, name)
            t.__durafka_name__ = d.name  # type: ignore[attr-defined]
            return t

        return register(target) if target is not None else register

    # -- infrastructure -------------------------------------------------------------------

    @property
    def transport(self) -> Transport:
        """The transport of ``settings.bootstrap_servers`` (opened once)."""
        if self._transport is None:
            from durafka.transport import open_transport

            self._transport = open_transport(self.settings.bootstrap, self.settings.client_config)
        return self._transport

    @property
    def store_factory(self) -> StoreFactory:
        """RocksDB stores under ``state_dir`` (memory stores on ``memory://``)."""
        if self._store_factory is None:
            use_memory = self.settings.use_memory_state
            if use_memory is None:
                use_memory = self.settings.is_memory
            if use_memory:
                from durafka.state.memory import MemoryStoreFactory

                self._store_factory = MemoryStoreFactory()
            else:
                from durafka.state.rocksdb import RocksDBStoreFactory

                self._store_factory = RocksDBStoreFactory(self.settings.state_dir)
        return self._store_factory

    def ensure_topics(self) -> None:
        """Create the task hub's topics if missing (a mismatch is a clear error)."""
        if not self._topics_ready:
            from durafka.errors import TopologyMismatchError
            from durafka.topology import DEFAULT_SPEC_PATH

            s = self.settings
            try:
                self.transport.ensure_topics(s.topic_specs())
            except TopologyMismatchError as exc:
                overrides = "".join(
                    f", {name}={value} (DURAFKA_{name.upper()})"
                    for name in ("partitions", "replication_factor")
                    if (value := getattr(s, name)) is not None
                )
                raise TopologyMismatchError(
                    f"{exc}\nThis app expects task hub {s.task_hub!r} as in "
                    f"{s.topology or DEFAULT_SPEC_PATH}{overrides}; run it with the "
                    "DURAFKA_TOPOLOGY / DURAFKA_PARTITIONS that `durafka topology apply` used."
                ) from None
            self._topics_ready = True

    def processor(self, partitions: list[int] | None = None, **kwargs: Any) -> Processor:
        """A processor for this app (group-assigned partitions unless ``partitions`` is given)."""
        from durafka.processor import Processor

        self.ensure_topics()
        if partitions is None and "processor_id" not in kwargs:
            kwargs["processor_id"] = self._stable_id("processor")
        return Processor(
            self.settings,
            self.registry,
            self.transport,
            self.store_factory,
            partitions=partitions,
            **kwargs,
        )

    def _stable_id(self, role: str) -> str | None:
        """An id kept in the state dir, so a restarted process reuses its ``transactional.id``.

        Reusing it fences the dead incarnation at once (its open transaction is
        aborted by ``init_transactions``) instead of leaving read_committed readers
        waiting for ``transaction.timeout.ms``. The id file is locked while this
        process lives; a second process on the same state dir gets a fresh id, so
        two live processes never fence each other. On memory:// there is nothing
        to keep.
        """
        if self.settings.is_memory:
            return None
        import fcntl
        import uuid

        path = self.settings.state_dir / f"{self.settings.task_hub}.{role}.id"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # another live process owns this id
        existing = os.read(fd, 64).decode().strip()
        if not existing:
            existing = uuid.uuid4().hex[:12]
            os.write(fd, (existing + "\n").encode())
        self._id_locks.append(fd)  # held (locked) until the app is closed
        return existing

    def worker(self, **kwargs: Any) -> ActivityWorker:
        """An activity worker for this app."""
        from durafka.activities.worker import ActivityWorker

        self.ensure_topics()
        if "worker_id" not in kwargs:
            # Kept locked (or random): no other live process can share it.
            kwargs["worker_id"] = self._stable_id("worker")
            kwargs.setdefault("exclusive_id", True)
        return ActivityWorker(self.settings, self.registry, self.transport, **kwargs)

    def runner(
        self,
        *,
        processor: bool = True,
        worker: bool = True,
        partitions: list[int] | None = None,
        exit_when_stuck: bool = False,
    ) -> Runner:
        """A runner hosting a processor and/or a worker on background threads (not started).

        Args:
            processor: host a processor.
            worker: host an activity worker.
            partitions: the processor's static partitions (None: the consumer group).
            exit_when_stuck: a Kafka call stuck past its bound ends the process with
                status 75 (the command line's choice); else the runner stops its
                roles and reports ``StuckCallError`` (see :mod:`durafka.watchdog`).
        """
        s = self.settings
        runner = Runner(
            gc_young_threshold=s.gc_young_threshold,
            # memory:// makes no blocking client calls to watch.
            watchdog_grace=None if s.is_memory else s.watchdog_grace_ms / 1000,
            exit_when_stuck=exit_when_stuck,
            metrics_port=s.metrics_port,
            metrics_host=s.metrics_host,
            health_timeout=s.health_timeout_ms / 1000,
        )
        local = None
        unclean = False
        if processor:
            if worker and self.settings.local_activities:
                # Co-located: activities run next to the processor, in its batches.
                from durafka.activities.local import LocalActivities

                unclean = self._after_unclean_exit(runner)
                local = LocalActivities(
                    self.registry,
                    max_concurrent=self.settings.max_concurrent_activities,
                    max_payload_bytes=self.settings.max_payload_bytes,
                    wait_seconds=self.settings.local_activity_wait_ms / 1000,
                    paused_for=LOCAL_ACTIVITY_PAUSE_S if unclean else 0.0,
                )
            proc = self.processor(partitions, local_activities=local)
            runner.add("processor", proc.run, proc.metrics)
        if worker:
            activity_worker = self.worker(local_activities=local, after_unclean_exit=unclean)
            runner.add("worker", activity_worker.run, activity_worker.metrics)
        return runner

    def _after_unclean_exit(self, runner: Runner) -> bool:
        """Whether the last process with local activities on this state dir died.

        Also arms the marker for ``runner``: a marker in the state dir exists while
        a runner with local activities runs and is removed when it stops cleanly.
        Found at start, the last process died (a crash, ``kill -9``, the OOM
        killer), maybe by an activity it ran locally, which the worker would never
        have counted: for :data:`LOCAL_ACTIVITY_PAUSE_S` every task goes through
        ``H.activities``, where its deliveries are counted.
        """
        if self.settings.is_memory:
            return False
        marker = CleanExitMarker(
            self.settings.state_dir / f"{self.settings.task_hub}.local-activities.running"
        )
        # Taken when the roles start: a process that fails before (an unreachable
        # cluster) ran nothing and leaves nothing behind.
        runner.on_start(marker.begin)
        runner.on_clean_stop(marker.remove)
        if not marker.left_behind():
            return False
        log.warning(
            "the last process on %s did not stop cleanly: activities run through the worker "
            "(which counts the deliveries of a task that takes its process down) for the "
            "first %.0f s",
            self.settings.state_dir,
            LOCAL_ACTIVITY_PAUSE_S,
        )
        return True

    @contextmanager
    def running(self, *, processor: bool = True, worker: bool = True) -> Iterator[Runner]:
        """Run a processor and a worker in this process for the ``with`` block (sync code)."""
        runner = self.runner(processor=processor, worker=worker)
        runner.start()
        try:
            yield runner
        finally:
            runner.stop()

    @asynccontextmanager
    async def run(self, *, processor: bool = True, worker: bool = True) -> AsyncIterator[Runner]:
        """Run a processor and a worker in this process for the ``async with`` block."""
        runner = await asyncio.to_thread(self.runner, processor=processor, worker=worker)
        runner.start()
        try:
            yield runner
        finally:
            await asyncio.to_thread(runner.stop)

    # -- clients ---------------------------------------------------------------------------

    def client(self) -> AsyncClient:
        """An asyncio client (aiokafka on Kafka) that knows this app's functions and types."""
        from durafka.client import AsyncClient

        self.ensure_topics()
        if self.settings.is_memory:
            return AsyncClient(self.settings, self.registry, self.transport)
        # On Kafka the asyncio client brings its own aiokafka producer and status feeder
        # (sharing the app's confluent-kafka transport would cost a thread hop per call).
        return AsyncClient(self.settings, self.registry)

    def sync_client(self) -> Client:
        """A blocking client (confluent-kafka on Kafka) knowing this app's functions and types."""
        from durafka.client import Client

        self.ensure_topics()
        return Client(self.settings, self.registry, self.transport)

    def close(self) -> None:
        """Release the transport and the id locks."""
        for fd in self._id_locks:
            os.close(fd)
        self._id_locks.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
