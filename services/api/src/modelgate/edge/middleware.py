"""The edge: the one pure ASGI middleware every HTTP request passes first.

For each request it adopts or makes the request id, counts the request in flight,
records the HTTP metrics and writes the access line once the answer is out, and turns an
unexpected exception into a logged, generic 500. One layer rather than one per concern:
each ASGI layer costs a coroutine and a ``send`` wrapper per request. Not
``BaseHTTPMiddleware``, which breaks context variables and costs throughput.

``app.ModelGateApp`` puts it in front of FastAPI's own middleware stack (see there why).
"""

from __future__ import annotations

import logging
import re
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelgate.edge.accesslog import AccessLog
from modelgate.edge.ids import new_id
from modelgate.errors import internal_error_body
from modelgate.observability.logging import request_id_var
from modelgate.observability.metrics import Metrics
from modelgate.observability.tracing import trace_id
from modelgate.protocols.handler import access_facts

errors_log = logging.getLogger("modelgate.errors")

# A client's id is echoed and logged, so only a short, harmless charset is accepted.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")  # fullmatch: "$" admits "\n"


class InFlight:
    """HTTP requests in flight in this worker: the edge counts them; the batchers (which
    wait for company only if some may come) and the in-flight gauge read them."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


class Edge:
    """Adopt the caller's ``X-Request-ID`` (nginx's ``$request_id`` through the gateway)
    or make one; echo it on the response; count, time and log every request in
    ``finally``, so that errors are counted and logged too."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        access_log: AccessLog,
        in_flight: InFlight | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.in_flight = in_flight if in_flight is not None else InFlight()
        metrics.in_flight_now = self.in_flight

    @property
    def requests_in_flight(self) -> int:
        return self.in_flight.count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if _VALID_REQUEST_ID.fullmatch(value):
                    request_id = value.decode()
                break
        if not request_id:
            request_id = new_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        header = (b"x-request-id", request_id.encode())
        status = 500  # unless an answer starts: an exception below is a 500
        response_started = response_complete = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started, response_complete
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), header]
            elif not message.get("more_body", False):
                response_complete = True
            await send(message)

        in_flight = self.in_flight
        in_flight.count += 1
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client went away mid-body: nobody to answer, and not a server error.
            # 499 is nginx's "client closed request", so the access line and the status
            # metric say what happened without counting a 5xx.
            status = 499
        except Exception as exc:
            errors_log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
            if not response_started:
                status = 500
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json"), header],
                    }
                )
                await send({"type": "http.response.body", "body": internal_error_body()})
            elif not response_complete:
                raise  # half an answer is out; the server can only drop the connection
            # else the framework answered (its server-error handler) and re-raised: logged.
        finally:
            in_flight.count -= 1
            elapsed = time.perf_counter() - started
            # The route template (bounded, groupable), once the router or lane matched one.
            route = getattr(scope.get("route"), "path", None)
            self.metrics.observe_http(route, scope["method"], status, elapsed)
            self.metrics.request_done(in_flight.count)
            if self.access_log.enabled:
                self._access_line(scope, request_id, route, status, elapsed)
            request_id_var.reset(token)

    def _access_line(
        self, scope: Scope, request_id: str, route: str | None, status: int, elapsed: float
    ) -> None:
        entry = self.access_log.start_entry()
        entry["request_id"] = request_id
        entry["method"] = scope["method"]
        entry["path"] = scope["path"]
        entry["route"] = route
        entry["status"] = status
        entry["latency_ms"] = round(elapsed * 1000, 3)
        facts = access_facts(scope)  # noted by the prediction handler
        if facts is not None:
            entry["model"] = facts.model
            entry["version"] = facts.version
            entry["cache"] = facts.cache
            entry["batch_rows"] = facts.batch_rows
        traced = trace_id(scope)  # a sampled request's, when tracing is on
        if traced is not None:
            entry["trace_id"] = traced
        self.access_log.write_entry(entry)
