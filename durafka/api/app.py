"""The HTTP API of ``durafka serve``, and the dashboard it serves at ``/``.

Every route calls :class:`~durafka.management.Management` and returns its
models, so the OpenAPI schema (``/openapi.json``, browsable at ``/api/docs``)
describes exactly what ``durafka <command> --json`` prints. Routes that change
nothing need the read-only role, the others the operator role (see
:mod:`durafka.api.auth`); request bodies are limited in size
(:mod:`durafka.api.limits`); ``/api/stream`` sends live updates
(:mod:`durafka.api.stream`).

Instance ids may contain ``/``: routes take them as the rest of the path
(``/api/instances/<id>/history`` matches the longest id that leaves the suffix).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from durafka.api.auth import ApiTokens, Role
from durafka.api.limits import BodySizeLimit
from durafka.api.stream import status_events
from durafka.errors import (
    DurafkaError,
    InstanceAlreadyExistsError,
    InstanceNotFinishedError,
    InstanceNotFoundError,
    InstanceNotRunningError,
    RewindError,
    TransportError,
    UnknownFunctionError,
    WaitTimeoutError,
)
from durafka.management import Management
from durafka.management.cluster import ThroughputPoint
from durafka.management.models import (
    ClusterInfo,
    DeadLetterInfo,
    DeadLetterPage,
    EntityInfo,
    EntityPage,
    HistoryEntry,
    InstanceAt,
    InstanceDetail,
    InstancePage,
    InstancePageView,
    QuarantinedInstance,
    RedriveOutcome,
    StatusCounts,
    TopologyReport,
)
from durafka.status import RuntimeStatus
from durafka.version import __version__

__all__ = ["create_api"]

log = logging.getLogger(__name__)

#: Seconds between two samples of the partitions (the throughput chart's resolution).
SAMPLE_SECONDS = 5.0

#: The dashboard: static files in the package (no build step).
_STATIC = Path(__file__).resolve().parent.parent / "dashboard" / "static"
_bearer = HTTPBearer(auto_error=False, description="DURAFKA_API_TOKEN or DURAFKA_API_READ_TOKEN")


class Accepted(BaseModel):
    """A command was written to the task hub (it takes effect when a processor applies it)."""

    instance_id: str
    accepted: bool = True
    execution_id: str | None = None


class EntityAccepted(BaseModel):
    """An entity operation was written to the task hub."""

    entity_id: str
    accepted: bool = True


class StartRequest(BaseModel):
    """What ``POST /api/instances`` starts."""

    name: str
    input: Any = None
    instance_id: str | None = None


class ReasonRequest(BaseModel):
    """Why an instance is terminated, suspended or resumed (kept in its history)."""

    reason: str | None = None


class ResetRequest(BaseModel):
    """Where ``POST /api/instances/<id>/reset`` resets to: an event index of the history."""

    to_event: int
    reason: str | None = None


class WhoAmI(BaseModel):
    """The caller's role and the task hub the server manages."""

    role: Role
    task_hub: str
    bootstrap: str
    version: str
    orchestrations: dict[str, int]


def _error_status(exc: Exception) -> int:
    if isinstance(exc, InstanceNotFoundError):
        return 404
    if isinstance(exc, InstanceAlreadyExistsError | InstanceNotRunningError):
        return 409
    if isinstance(exc, InstanceNotFinishedError | RewindError):
        return 409
    if isinstance(exc, UnknownFunctionError | ValueError):
        return 400
    if isinstance(exc, TransportError | WaitTimeoutError):
        return 503
    return 500


def create_api(
    management: Management,
    tokens: ApiTokens,
    *,
    max_request_bytes: int = 1_100_000,
    sample_seconds: float = SAMPLE_SECONDS,
) -> FastAPI:
    """The ASGI app of ``durafka serve``: the API under ``/api``, the dashboard at ``/``.

    Args:
        management: the task hub it manages (left open: the caller closes it).
        tokens: who may call (see :mod:`durafka.api.auth`).
        max_request_bytes: the largest request body accepted (413 beyond).
        sample_seconds: seconds between two samples of the partitions (0: none in
            the background; the cluster page then samples when it is read).
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        sampler = None
        if sample_seconds > 0:
            sampler = threading.Thread(
                target=_sample, args=(management, stop, sample_seconds), daemon=True
            )
            sampler.start()
        try:
            yield
        finally:
            stop.set()
            if sampler is not None:
                await asyncio.to_thread(sampler.join, 10)

    api = FastAPI(
        title="durafka",
        version=__version__,
        summary="Manage the instances, entities and partitions of a durafka task hub.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )

    @api.exception_handler(DurafkaError)
    @api.exception_handler(ValueError)
    async def _durafka_error(_: Request, exc: Exception) -> JSONResponse:
        status = _error_status(exc)
        if status == 500:
            log.exception("request failed", exc_info=exc)
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status)

    api.state.tokens = tokens
    read = [Depends(reader)]
    write = [Depends(operator)]
    m = management

    # -- who, instances ---------------------------------------------------------------

    @api.get("/api/whoami", tags=["server"])
    def whoami(role: Annotated[Role, Depends(reader)]) -> WhoAmI:
        """The caller's role, the task hub and its orchestrations (with instance counts)."""
        return WhoAmI(
            role=role,
            task_hub=m.settings.task_hub,
            bootstrap=m.settings.bootstrap,
            version=__version__,
            orchestrations=m.orchestration_names(),
        )

    @api.get("/api/instances", dependencies=read, tags=["instances"])
    def list_instances(
        status: Annotated[list[RuntimeStatus] | None, Query()] = None,
        name: str | None = None,
        id_prefix: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        newest_first: bool = False,
        page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
        continuation: str | None = None,
    ) -> InstancePage:
        """One page of instances (filters, continuation paging; a range read, not a scan)."""
        return m.list_instances(
            status=status,
            name=name,
            id_prefix=id_prefix,
            created_from=created_from,
            created_to=created_to,
            descending=newest_first,
            page_size=page_size,
            continuation=continuation,
        )

    @api.get("/api/counts", dependencies=read, tags=["instances"])
    def counts(name: str | None = None) -> StatusCounts:
        """Instances per runtime status (of one orchestration)."""
        return m.counts(name)

    @api.post("/api/instances", dependencies=write, tags=["instances"], status_code=202)
    def start(body: StartRequest) -> Accepted:
        """Start an instance (its input is checked against the orchestration's type)."""
        iid = m.start(body.name, body.input, instance_id=body.instance_id)
        return Accepted(instance_id=iid)

    @api.get("/api/instances/{instance_id:path}/history", dependencies=read, tags=["instances"])
    def history(instance_id: str) -> list[HistoryEntry]:
        """The history of the instance's current generation (scans one changelog partition)."""
        return m.history(instance_id)

    @api.get("/api/instances/{instance_id:path}/at", dependencies=read, tags=["instances"])
    def instance_at(instance_id: str, time: datetime) -> InstanceAt:
        """The instance as it was at ``time`` (ISO 8601 with zone), from the changelog."""
        return m.instance_at(instance_id, time)

    @api.get("/api/instances/{instance_id:path}/page", dependencies=read, tags=["instances"])
    def instance_page(instance_id: str) -> InstancePageView:
        """Status, children, timeline and history: the dashboard's instance page, in one read."""
        return m.instance_page(instance_id)

    @api.post(
        "/api/instances/{instance_id:path}/events/{event_name}",
        dependencies=write,
        tags=["instances"],
        status_code=202,
    )
    def raise_event(
        instance_id: str, event_name: str, data: Annotated[Any, Body()] = None
    ) -> Accepted:
        """Send an external event; the body is its data (any JSON)."""
        m.raise_event(instance_id, event_name, data)
        return Accepted(instance_id=instance_id)

    @api.post(
        "/api/instances/{instance_id:path}/terminate",
        dependencies=write,
        tags=["instances"],
        status_code=202,
    )
    def terminate(instance_id: str, body: ReasonRequest | None = None) -> Accepted:
        """Terminate a pending, running or suspended instance (and its children)."""
        m.terminate(instance_id, body.reason if body else None)
        return Accepted(instance_id=instance_id)

    @api.post(
        "/api/instances/{instance_id:path}/suspend",
        dependencies=write,
        tags=["instances"],
        status_code=202,
    )
    def suspend(instance_id: str, body: ReasonRequest | None = None) -> Accepted:
        """Suspend a pending or running instance."""
        m.suspend(instance_id, body.reason if body else None)
        return Accepted(instance_id=instance_id)

    @api.post(
        "/api/instances/{instance_id:path}/resume",
        dependencies=write,
        tags=["instances"],
        status_code=202,
    )
    def resume(instance_id: str, body: ReasonRequest | None = None) -> Accepted:
        """Resume a suspended instance."""
        m.resume(instance_id, body.reason if body else None)
        return Accepted(instance_id=instance_id)

    @api.post(
        "/api/instances/{instance_id:path}/restart",
        dependencies=write,
        tags=["instances"],
        status_code=202,
    )
    def restart(instance_id: str) -> Accepted:
        """Run a finished instance again (a new execution, same id, name and input)."""
        execution = m.restart(instance_id)
        return Accepted(instance_id=instance_id, execution_id=execution)

    @api.post(
        "/api/instances/{instance_id:path}/rewind",
        dependencies=write,
        tags=["instances"],
        status_code=202,
    )
    def rewind(instance_id: str, body: ReasonRequest | None = None) -> Accepted:
        """Put a failed instance back to running, retrying the calls that failed it."""
        m.rewind(instance_id, body.reason if body else None)
        return Accepted(instance_id=instance_id)

    @api.post(
        "/api/instances/{instance_id:path}/reset",
        dependencies=write,
        tags=["instances"],
        status_code=202,
    )
    def reset(instance_id: str, body: ResetRequest) -> Accepted:
        """Run an instance again from an event of its history (a new execution)."""
        execution = m.reset(instance_id, body.to_event, body.reason)
        return Accepted(instance_id=instance_id, execution_id=execution)

    @api.delete(
        "/api/instances/{instance_id:path}",
        dependencies=write,
        tags=["instances"],
        status_code=202,
    )
    def purge(instance_id: str) -> Accepted:
        """Purge a finished instance: its history, state and status."""
        m.purge(instance_id)
        return Accepted(instance_id=instance_id)

    @api.get("/api/instances/{instance_id:path}", dependencies=read, tags=["instances"])
    def get_instance(instance_id: str) -> InstanceDetail:
        """One instance's status, input, output, custom status and failure."""
        return m.get_instance(instance_id)

    # -- entities ---------------------------------------------------------------------

    @api.get("/api/entities", dependencies=read, tags=["entities"])
    def list_entities(
        name: str | None = None,
        page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
        continuation: str | None = None,
    ) -> EntityPage:
        """One page of entities with a state, ordered by id."""
        return m.list_entities(name=name, page_size=page_size, continuation=continuation)

    @api.post(
        "/api/entities/{name}/{key:path}/signals/{operation}",
        dependencies=write,
        tags=["entities"],
        status_code=202,
    )
    def signal_entity(
        name: str, key: str, operation: str, input: Annotated[Any, Body()] = None
    ) -> EntityAccepted:
        """Send a one-way operation to an entity; the body is its input (any JSON)."""
        m.signal_entity(name, key, operation, input)
        return EntityAccepted(entity_id=f"@{name}@{key}")

    @api.delete(
        "/api/entities/{name}/{key:path}", dependencies=write, tags=["entities"], status_code=202
    )
    def delete_entity(name: str, key: str) -> EntityAccepted:
        """Delete an entity's state."""
        m.delete_entity(name, key)
        return EntityAccepted(entity_id=f"@{name}@{key}")

    @api.get("/api/entities/{name}/{key:path}", dependencies=read, tags=["entities"])
    def get_entity(name: str, key: str) -> EntityInfo:
        """One entity's state and lock."""
        return m.get_entity(name, key)

    # -- dead letters, cluster, topology ----------------------------------------------

    @api.get("/api/dead-letters", dependencies=read, tags=["dead letters"])
    def dead_letters(
        limit: Annotated[int, Query(ge=1, le=500)] = 50, continuation: str | None = None
    ) -> DeadLetterPage:
        """The newest dead letters, a page at a time."""
        return m.dead_letters(limit=limit, continuation=continuation)

    @api.get("/api/dead-letters/{dead_letter_id}", dependencies=read, tags=["dead letters"])
    def dead_letter(dead_letter_id: str) -> DeadLetterInfo:
        """One dead letter by its id ``<partition>:<offset>``."""
        return m.dead_letter(dead_letter_id)

    @api.post(
        "/api/dead-letters/{dead_letter_id}/redrive", dependencies=write, tags=["dead letters"]
    )
    def redrive(dead_letter_id: str) -> RedriveOutcome:
        """Produce a dead letter's record again to its source topic (at most once)."""
        [outcome] = m.redrive([dead_letter_id])
        return outcome

    @api.get("/api/quarantined", dependencies=read, tags=["instances"])
    def quarantined() -> list[QuarantinedInstance]:
        """Instances quarantined because their stored state did not decode."""
        return m.quarantined()

    @api.get("/api/partitions", dependencies=read, tags=["cluster"])
    def partitions() -> ClusterInfo:
        """Owner, lag and state of every input partition (from the latest sample)."""
        return m.cluster.info(resample=sample_seconds <= 0)

    @api.get("/api/throughput", dependencies=read, tags=["cluster"])
    def throughput() -> list[ThroughputPoint]:
        """Records per second over the last minutes (one point per sample)."""
        return m.throughput()

    @api.get("/api/topology", dependencies=read, tags=["cluster"])
    def topology() -> TopologyReport:
        """The task hub's topics against the default topology spec."""
        return m.topology(partitions=m.settings.partitions)

    # -- live updates -----------------------------------------------------------------

    @api.get(
        "/api/stream",
        dependencies=read,
        tags=["instances"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(request: Request, instance_id: str | None = None) -> StreamingResponse:
        """Server-sent events: ``counts`` on every change, or ``instance`` for one instance."""
        # Waits (in a thread) until the view has caught up, and checks the id.
        if instance_id is not None:
            await run_in_threadpool(m.get_instance, instance_id)

            def render() -> tuple[str, Any]:
                try:
                    return "instance", m.get_instance(instance_id).model_dump(mode="json")
                except InstanceNotFoundError:  # purged while watched
                    return "purged", {"instance_id": instance_id}
        else:
            await run_in_threadpool(m.counts)

            def render() -> tuple[str, Any]:
                return "counts", m.counts().model_dump(mode="json")

        events = status_events(request, m.client.status_view, render, instance_id=instance_id)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- the dashboard ----------------------------------------------------------------

    @api.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(_STATIC / "index.html")

    api.mount("/static", StaticFiles(directory=_STATIC), name="static")
    api.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    return api


def _role(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Role:
    tokens: ApiTokens = request.app.state.tokens
    found = tokens.role_of(credentials.credentials if credentials is not None else None)
    if found is None:
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return found


def reader(role: Annotated[Role, Depends(_role)]) -> Role:
    """Any valid token (routes that change nothing)."""
    return role


def operator(role: Annotated[Role, Depends(_role)]) -> Role:
    """The operator token (routes that write to the task hub)."""
    if role != "admin":
        raise HTTPException(403, "this token is read-only")
    return role


def _sample(management: Management, stop: threading.Event, seconds: float) -> None:
    """Sample the partitions every ``seconds`` until ``stop`` (the throughput chart's data)."""
    while not stop.is_set():
        try:
            management.cluster.sample()
        except DurafkaError as exc:
            log.warning("sampling the partitions failed: %s", exc)
        stop.wait(seconds)
