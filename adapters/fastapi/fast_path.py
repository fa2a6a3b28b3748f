"""The two requests every scheduled fire makes, answered ahead of FastAPI's routing: `POST
/{kind}/{id}/runs` for a background run (what the dispatcher sends) and `GET /{kind}/{id}/runs/
{run_id}?session_id=...` for a run this process saved (its registry and cache, run_cache.py).

A pure ASGI middleware inside the app's error and body-limit middleware. It answers only a
request it can answer exactly as the route would (the same checks, the same helpers, the same
response object); anything else (no or a wrong token, an unknown component or run, a body that is
not a form or JSON, a stream or a synchronous run, any error) goes on to the routes untouched,
the body it read replayed, so every error keeps the route's shape. Routing, dependency solving
and parameter validation for each of those requests was most of a fire's cost in-process.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .context import ServerContext, check_token, request_user
from .executor import KINDS
from .run_request import read_run_request

# Bodies larger than this go to the route (which reads them under the app's body limit).
BODY_LIMIT = 64 * 1024
_FAST_TYPES = ("application/x-www-form-urlencoded", "application/json")


class FastPath:
    def __init__(self, app: ASGIApp, ctx: ServerContext):
        self.app = app
        self.ctx = ctx
        self.answered = 0  # requests answered here (the rest went on to the routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.ctx.runs is not None:
            parts = _route_path(scope).split("/")
            if len(parts) >= 4 and parts[0] == "" and parts[1] in KINDS and parts[3] == "runs":
                method = scope["method"]
                if method == "GET" and len(parts) == 5 and parts[4]:
                    if await self._poll(scope, receive, send, parts[1], parts[2], parts[4]):
                        return
                elif method == "POST" and len(parts) == 4:
                    receive = await self._create(scope, receive, send, parts[1], parts[2])
                    if receive is None:
                        return
        await self.app(scope, receive, send)

    def _component(self, request: Request, kind: str, component_id: str) -> Any:
        from .runs import find_component  # the routes' own lookup

        try:
            check_token(self.ctx, request)
            return find_component(self.ctx, kind, component_id)
        except HTTPException:
            return None

    async def _poll(
        self, scope: Scope, receive: Receive, send: Send, kind: str, component_id: str, run_id: str
    ) -> bool:
        from .runs import poll_answer

        sessions = [
            v for k, v in parse_qsl(scope["query_string"].decode("latin-1")) if k == "session_id"
        ]
        if len(sessions) != 1:
            return False
        request = Request(scope, receive)
        component = self._component(request, kind, component_id)
        if component is None:
            return False
        executor = self.ctx.runs
        run = executor.saved.get(run_id)
        if run is None and not executor.saved.unsaved(run_id):
            return False  # the store decides: the route reads it
        response = poll_answer(executor, component, run_id, sessions[0], run)
        if response is None:
            return False
        self.answered += 1
        await response(scope, receive, send)
        return True

    async def _create(
        self, scope: Scope, receive: Receive, send: Send, kind: str, component_id: str
    ) -> Receive | None:
        """Answer a background run's POST (None), else the receive to hand on (its body
        replayed if it was read)."""
        from .runs import accepted

        request = Request(scope, receive)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = request.headers.get("content-length", "")
        if media_type not in _FAST_TYPES or not length.isdigit() or int(length) > BODY_LIMIT:
            return receive
        component = self._component(request, kind, component_id)
        if component is None:
            return receive
        body = await request.body()
        replay = _replaying(body, receive)
        try:
            run_request = await read_run_request(request)
        except Exception:  # the route says what is wrong, in its own shape
            return replay
        if run_request.stream or not run_request.background:
            return replay
        if run_request.user_id is None:
            run_request.user_id = request_user(request)
        live = self.ctx.runs.submit(component, run_request)
        self.answered += 1
        await accepted(live)(scope, replay, send)
        return None


def _route_path(scope: Scope) -> str:
    """The path the app routes on: the request path without the app's mount point."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read once, then what the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
