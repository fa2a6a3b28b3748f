"""`AgentOS`: one FastAPI app that serves agents, teams and workflows, keeps schedules in the same
store, and (unless `scheduler=False`) runs a Scheduler in its lifespan that fires due schedules
through this app's own routes, with the app's token, exactly as an external caller would.

Firing in-process (`scheduler_base_url=None`) goes through httpx.ASGITransport into this same
app: the whole middleware and auth path, no socket. With a URL it goes over real HTTP, which is
what several replicas behind one address use.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Request

from leasecron.kernel import (
    Clock,
    HttpDispatcher,
    ScheduleManager,
    Scheduler,
    SchedulerTools,
    Store,
    StoreError,
    SystemClock,
    ValidationError,
)
from leasecron.kernel.observe.eventlog import chain
from leasecron.kernel.observe.metrics import Metrics
from leasecron.kernel.open_store import open_store

from .context import ServerContext, check_token, install_error_handlers
from .executor import KINDS, RunExecutor, check_component

IN_PROCESS_BASE_URL = "http://agentos.internal"
# The scheduler fires this app (or a replica of it), which honours `Prefer: wait`: a run's POST
# is held until the run ends (200 with the finished run: one request per fire for a short run),
# a longer run's polls likewise, each at most this long (and never past the attempt's timeout).
LONG_POLL = 30.0
# Should a poll ever come back unheld (a target that ignores the preference), the first goes out
# almost at once and the next ones back off as usual.
FIRST_POLL = 0.002
OnStartup = Callable[[ScheduleManager], Awaitable[None]]
EventHook = Callable[[str, dict[str, Any]], None]


def component_id(obj: Any, kind: str) -> str:
    """An agent's, team's or workflow's id: `.id`, else `.name`, a non-empty string without
    "/" (it is one segment of its routes' paths)."""
    for attr in ("id", "name"):
        value = getattr(obj, attr, None)
        if isinstance(value, str) and value.strip():
            if "/" in value:
                raise ValidationError(kind, f"id {value!r} must not contain '/'")
            return value
    raise ValidationError(kind, f"{obj!r} needs a non-empty id (or name)")


def _by_id(items: Iterable[Any] | None, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for obj in items or ():
        key = component_id(obj, kind)
        check_component(kind, obj)
        if key in out:
            raise ValidationError(kind, f"two {kind} share the id {key!r}")
        out[key] = obj
    return out


class AgentOS:
    def __init__(
        self,
        db: str | Store = "leasecron.db",
        *,
        agents: Iterable[Any] | None = None,
        teams: Iterable[Any] | None = None,
        workflows: Iterable[Any] | None = None,
        token: str | None = None,
        scheduler: bool = True,
        scheduler_poll_interval: float = 1.0,
        scheduler_base_url: str | None = None,
        scheduler_max_concurrent: int = 100,
        on_startup: OnStartup | None = None,
        on_event: EventHook | None = None,
        allowed_endpoints: Iterable[str] = (),
        name: str = "leasecron AgentOS",
        clock: Clock | None = None,
    ):
        token = token if token is not None else os.environ.get("LEASECRON_TOKEN") or None
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ValidationError("token", "must be a non-empty string or None")
        if not scheduler_poll_interval > 0:
            raise ValidationError("scheduler_poll_interval", "must be > 0")
        if not isinstance(scheduler_max_concurrent, int) or scheduler_max_concurrent < 1:
            raise ValidationError("scheduler_max_concurrent", "must be an int >= 1")
        if on_startup is not None and not callable(on_startup):
            raise ValidationError("on_startup", "must be an async callable(manager)")
        if on_event is not None and not callable(on_event):
            raise ValidationError("on_event", "must be a callable(event, data)")
        self.db = db
        self.name = name
        self.clock = clock  # None: the system clock (aligned to a store's time authority)
        self.run_scheduler = bool(scheduler)
        self.scheduler_poll_interval = float(scheduler_poll_interval)
        self.scheduler_base_url = scheduler_base_url
        self.scheduler_max_concurrent = scheduler_max_concurrent
        self.on_startup = on_startup
        self.on_event = on_event
        self.metrics = Metrics()  # what GET /metrics shows: this process's scheduler
        self.ctx = ServerContext(
            token=token,
            agents=_by_id(agents, "agents"),
            teams=_by_id(teams, "teams"),
            workflows=_by_id(workflows, "workflows"),
            allowed_endpoints=tuple(allowed_endpoints),
        )
        self._app: FastAPI | None = None

    @property
    def token(self) -> str | None:
        """The bearer token every request must carry (None: none is required)."""
        return self.ctx.token

    def configure(
        self,
        *,
        db: str | Store | None = None,
        scheduler: bool | None = None,
        token: str | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        """Override settings given to the constructor (what `leasecron serve`'s flags do), before
        the app starts (its lifespan reads them); None leaves a setting as it is."""
        if self.ctx.store is not None:
            raise RuntimeError("configure() must come before the app starts")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ValidationError("token", "must be a non-empty string")
        if on_event is not None and not callable(on_event):
            raise ValidationError("on_event", "must be a callable(event, data)")
        if db is not None:
            self.db = db
        if scheduler is not None:
            self.run_scheduler = bool(scheduler)
        if token is not None:
            self.ctx.token = token
        if on_event is not None:
            self.on_event = on_event

    def scheduler_tools(
        self,
        *,
        user_id: str | None = None,
        default_endpoint: str | None = None,
        default_timezone: str = "UTC",
    ) -> SchedulerTools:
        """Schedule tools for an agent of this app, acting for `user_id` (None: the operator).
        They may target this app's own run endpoints and `allowed_endpoints` only, the same
        rule as the REST routes, and reach the app's schedules once it has started (an agent
        can be given them before)."""
        ctx = self.ctx
        own = [f"/{kind}/{cid}/runs" for kind in KINDS for cid in getattr(ctx, kind)]

        def manager() -> ScheduleManager:
            if ctx.manager is None:  # a tool answers "store unavailable", as for a store down
                raise StoreError("open", RuntimeError("the AgentOS app has not started"))
            return ctx.manager

        return SchedulerTools(
            manager,
            allowed_endpoints=[*own, *ctx.allowed_endpoints],
            default_endpoint=default_endpoint,
            default_timezone=default_timezone,
            user_id=user_id,
        )

    # -- the app -----------------------------------------------------------------------------

    def get_app(self) -> FastAPI:
        """The FastAPI app (built once). Its lifespan opens the store, runs `on_startup` and
        starts the scheduler; closing it stops the scheduler and closes a store it opened."""
        if self._app is None:
            self._app = self._build()
        return self._app

    def _build(self) -> FastAPI:
        from . import dashboard, metrics, runs, schedules, status

        ctx = self.ctx

        # async: FastAPI runs a plain-def dependency on its thread pool, a thread hop on every
        # request (most of a poll's cost in-process).
        async def authorized(request: Request) -> None:
            check_token(ctx, request)

        app = FastAPI(title=self.name, lifespan=self._lifespan)
        install_error_handlers(app)
        guarded = [Depends(authorized)]
        app.include_router(runs.open_router(ctx, self))
        app.include_router(dashboard.router())
        app.include_router(runs.router(ctx), dependencies=guarded)
        app.include_router(schedules.router(ctx), dependencies=guarded)
        app.include_router(metrics.router(ctx, self.metrics), dependencies=guarded)
        app.include_router(status.router(ctx), dependencies=guarded)
        return app

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        ctx = self.ctx
        clock = SystemClock()
        owned = isinstance(self.db, str)
        store = open_store(self.db) if isinstance(self.db, str) else self.db
        ctx.store = store
        ctx.manager = ScheduleManager(store, clock=self.clock)
        ctx.started_at = clock.now()
        ctx.runs = RunExecutor(store, ctx.workflows.values(), clock=self.clock)
        dispatcher = None
        try:
            if self.on_startup is not None:
                started = self.on_startup(ctx.manager)
                if inspect.isawaitable(started):
                    await started
            if self.run_scheduler:
                dispatcher = self._dispatcher(app)
                ctx.scheduler = Scheduler(
                    store,
                    dispatcher,
                    poll_interval=self.scheduler_poll_interval,
                    max_concurrent=self.scheduler_max_concurrent,
                    on_event=chain(self.metrics, self.on_event),
                    clock=self.clock,
                )
                self.metrics.replica = ctx.scheduler.replica_id
                await ctx.scheduler.start()
            yield
        finally:
            if ctx.scheduler is not None:
                # No wait for attempts in flight: their runs are this app's, cancelled below,
                # and over a socket uvicorn has stopped taking the polls already. Their leases
                # are handed back at once; the next holder attaches and sees CANCELLED.
                await ctx.scheduler.stop(timeout=0)
                ctx.scheduler = None
            if dispatcher is not None:
                await dispatcher.aclose()
            # Runs still in flight end CANCELLED (saved so) before the store closes.
            await ctx.runs.shutdown()
            ctx.runs.release()
            ctx.runs = None
            if owned:
                await store.close()

    def _dispatcher(self, app: FastAPI) -> HttpDispatcher:
        if self.scheduler_base_url is None:
            return HttpDispatcher(
                IN_PROCESS_BASE_URL,
                token=self.ctx.token,
                transport=httpx.ASGITransport(app=app),
                poll_initial=FIRST_POLL,
                long_poll=LONG_POLL,
                clock=self.clock,
            )
        return HttpDispatcher(
            self.scheduler_base_url,
            token=self.ctx.token,
            max_connections=self.scheduler_max_concurrent,
            poll_initial=FIRST_POLL,
            long_poll=LONG_POLL,
            clock=self.clock,
        )

    def serve(self, host: str = "127.0.0.1", port: int = 7777, **uvicorn_options: Any) -> None:
        """Run the app under uvicorn until interrupted."""
        import uvicorn

        uvicorn.run(self.get_app(), host=host, port=port, **uvicorn_options)
