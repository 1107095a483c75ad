"""The aiohttp app: /metrics, /healthz, /readyz, /v1/drift, POST /v1/events and /v1/labels.

Bounded against clients that hold resources: connections are capped (the oldest idle one
makes room for a new one, so probes and scrapes get through), idle ones time out, and the
bodies being received share one byte budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from sidecar import frames
from sidecar.config import Config
from sidecar.events import Rejection, decode_body
from sidecar.exposition import render_chunks, restrict
from sidecar.health import Health
from sidecar.pipeline import Pipeline

log = structlog.get_logger("sidecar.server")


class DaemonView(Protocol):
    """What the handlers read from the daemon (`sidecar.daemon.Daemon`)."""

    @property
    def config(self) -> Config: ...

    @property
    def health(self) -> Health: ...

    @property
    def pipeline(self) -> Pipeline: ...

    @property
    def accepting(self) -> bool:
        """Whether POST /v1/events takes events (false once shutdown has begun)."""
        ...

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the daemon can still receive events (its socket is in place)."""
        ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether every model has a baseline, and each model's baseline status."""
        ...

    def drift_report(self) -> dict[str, Any]:
        """The `GET /v1/drift` body."""
        ...


class BodyBudget:
    """Bytes of request bodies held at once, all requests together (max_inflight_body_bytes)."""

    def __init__(self) -> None:
        self.used = 0

    def take(self, n: int, limit: int) -> bool:
        if self.used + n > limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class Connections:
    """Caps open HTTP connections at http.max_connections: a new connection over the cap
    closes the oldest idle one, so idle or half-sent requests (which hold a descriptor each)
    can never lock out a liveness probe or a scrape. Only when every connection is busy in a
    handler is the new one refused."""

    def __init__(self, state: DaemonView) -> None:
        self.state = state
        self.busy: set[Any] = set()  # request.protocol of the requests in a handler
        # Every connection from its accept to its close, oldest first. Counted here rather
        # than from aiohttp's own list, which learns of an accepted connection a loop
        # iteration later: a burst of accepts would overshoot the cap.
        self.open: dict[_Counted, None] = {}

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        proto = request.protocol
        self.busy.add(proto)
        try:
            return await handler(request)
        finally:
            self.busy.discard(proto)

    def admit(self, server: web.Server) -> asyncio.BaseProtocol:
        """The protocol factory of the listening socket."""
        health = self.state.health
        limit = self.state.config.http.max_connections
        if len(self.open) >= limit:
            idle = next((c for c in self.open if c.handler not in self.busy), None)
            if idle is None:
                health.http_connections_shed["refused"] += 1
                self.state.pipeline.rejection_log.event(  # rate-limited: a flood would
                    "http_connection_refused",
                    "busy",  # otherwise fill the log
                    reason="every connection is busy in a handler",
                    limit=limit,
                )
                return _Refused()
            idle.close()
            health.http_connections_shed["idle_closed"] += 1
        counted = _Counted(server(), self)
        self.open[counted] = None
        return counted


class _Counted(asyncio.Protocol):
    """aiohttp's connection handler, with its opening and closing known to `Connections`."""

    def __init__(self, handler: RequestHandler, owner: Connections) -> None:
        self.handler = handler
        self.owner = owner
        self.made = False
        self.closed = False

    def close(self) -> None:
        """Close at once; one accepted in the same burst and not yet started is aborted as
        it starts, without ever reaching aiohttp."""
        self.closed = True
        self.owner.open.pop(self, None)  # its slot is free from now
        if self.made:
            self.handler.force_close()  # closes the transport; connection_lost follows

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.closed:
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return
        self.made = True
        self.handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.open.pop(self, None)
        if self.made:
            self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.made:
            self.handler.data_received(data)

    def eof_received(self) -> None:
        if self.made:
            self.handler.eof_received()

    def pause_writing(self) -> None:
        if self.made:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.made:
            self.handler.resume_writing()


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class LimitedTCPSite(web.BaseSite):
    """A TCP site whose connections go through `Connections.admit`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, connections: Connections
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._connections = connections
        self.bound_port: int = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._connections.admit(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
        if self._server.sockets:
            self.bound_port = self._server.sockets[0].getsockname()[1]


class Api:
    """The handlers; the daemon passes in what they read, never a global."""

    def __init__(
        self,
        registry: CollectorRegistry,
        state: DaemonView,
    ) -> None:
        self.registry = registry
        self.state = state
        self.bodies = BodyBudget()

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        # `name[]=...` keeps only those samples, as prometheus_client's own exposition does;
        # a poller that wants one counter then pays for formatting one counter.
        names = set(request.query.getall("name[]", []))
        # Collect on the loop, where the counters are only ever touched: the families hold
        # copies of the numbers, so the scrape is one consistent snapshot. Format them on
        # the loop too, in pieces that let ingest run in between (sidecar.exposition).
        families = list(self.registry.collect())
        await asyncio.sleep(0)  # collecting 1,000 features takes about 1 ms: a turn after it
        chunks = await render_chunks(
            restrict(families, names) if names else families, encoder, openmetrics
        )
        # written a chunk at a time with a turn for the loop between (a 4 MiB body in one
        # write is a copy of about 1 ms, and joining it another); the length is known, so
        # the response is not chunked
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.content_length = sum(map(len, chunks))
        try:
            await response.prepare(request)
            if request.method != "HEAD":  # a HEAD answer has the length and no body
                for chunk in chunks:
                    await response.write(chunk)
                    await asyncio.sleep(0)
            await response.write_eof()
        except ConnectionError:
            # the scraper left mid-body (its scrape timeout, say): nobody to answer, and
            # nothing wrong here to log
            pass
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        alive, detail = self.state.liveness()
        return web.json_response(detail, status=200 if alive else 503)

    async def readyz(self, request: web.Request) -> web.Response:
        ready, detail = self.state.readiness()
        return web.json_response(
            {"status": "ready" if ready else "not_ready", "models": detail},
            status=200 if ready else 503,
        )

    async def drift(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.drift_report())

    async def post_events(self, request: web.Request) -> web.Response:
        return await self._post(request, labels=False)

    async def post_labels(self, request: web.Request) -> web.Response:
        """POST /v1/labels: the bodies of /v1/events, every object a label event."""
        return await self._post(request, labels=True)

    async def _post(self, request: web.Request, labels: bool) -> web.Response:
        config = self.state.config
        if not config.http.ingest_enabled:
            return web.json_response(
                {"error": "POST /v1/events is disabled (http.ingest_enabled: false)"}, status=403
            )
        if not self.state.accepting:
            return self._closed()
        http = config.http
        limit = http.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._too_large(limit)
        held = 0
        try:
            body = bytearray()
            async with asyncio.timeout(http.body_timeout_s):
                async for chunk in request.content.iter_chunked(1 << 16):
                    if len(body) + len(chunk) > limit:
                        return self._too_large(limit)
                    # Declared bodies hold their whole size at once: a stalled one cannot
                    # grow past what the budget let in.
                    want = max(request.content_length or 0, len(body) + len(chunk)) - held
                    if want > 0:
                        if not self.bodies.take(want, http.max_inflight_body_bytes):
                            return self._busy(http.max_inflight_body_bytes)
                        held += want
                    body += chunk
            if not self.state.accepting:  # shutdown began while the body was read
                return self._closed()
            if request.content_type == frames.CONTENT_TYPE:
                if labels:  # frames carry prediction events only (docs/operations.md)
                    return web.json_response(
                        {"error": "POST /v1/labels takes JSON bodies, not Arrow streams"},
                        status=415,
                    )
                return self._ingest_frames(bytes(body), config)
            return self._ingest(bytes(body), config, labels)
        except TimeoutError:
            return self._timed_out(http.body_timeout_s)
        finally:
            self.bodies.give(held)

    def _ingest(self, body: bytes, config: Config, labels: bool = False) -> web.Response:
        decoded = decode_body(body, config.socket.max_batch_events)
        if labels:
            for ev in decoded.events:
                ev.kind = "label"
        errors: list[Rejection] = []
        try:
            accepted = self.state.pipeline.handle(decoded, "http", errors=errors)
        except Exception as exc:  # a defect: answer, count and keep serving
            n = len(decoded.events) + len(decoded.rejections)
            self.state.pipeline.dropped(n, "http", exc)
            return web.json_response(
                {
                    "error": "internal error while processing the events; they are counted as "
                    "dropped (drift_sidecar_events_dropped_total)",
                    "dropped": n,
                },
                status=500,
            )
        status = 200 if not errors else (202 if accepted else 400)
        return web.json_response(
            {
                "accepted": accepted,
                "rejected": len(errors),
                "errors": [{"reason": r.reason, "detail": r.detail} for r in errors[:20]],
            },
            status=status,
        )

    def _ingest_frames(self, body: bytes, config: Config) -> web.Response:
        """An Arrow IPC stream as the body (`sidecar.frames`): answered as a JSON body
        is, and a stream that cannot be read to its end also says why (400)."""
        if not config.socket.arrow_enabled:
            self.state.health.frame_errors["refused"] += 1
            return web.json_response(
                {"error": "Arrow IPC streams are switched off (socket.arrow_enabled: false)"},
                status=415,
            )
        from sidecar.frame_ingest import ingest_body  # noqa: PLC0415 (loads pyarrow)

        errors: list[Rejection] = []
        accepted, problem = ingest_body(self.state.pipeline, body, config, errors)
        out: dict[str, Any] = {
            "accepted": accepted,
            "rejected": len(errors),
            "errors": [{"reason": r.reason, "detail": r.detail} for r in errors[:20]],
        }
        if problem is not None:
            out["stream_error"] = {"reason": problem.reason, "detail": problem.detail}
            return web.json_response(out, status=400)
        status = 200 if not errors else (202 if accepted else 400)
        return web.json_response(out, status=status)

    def _closed(self) -> web.Response:
        # Shutting down: the final snapshot may already be written, so accepting now
        # could acknowledge events that are then lost. The client retries elsewhere.
        return web.json_response({"error": "shutting down"}, status=503)

    def _too_large(self, limit: int) -> web.Response:
        self.state.pipeline.reject("body_too_large", f"body over {limit} bytes")
        return web.json_response({"error": f"body larger than {limit} bytes"}, status=413)

    def _busy(self, limit: int) -> web.Response:
        self.state.health.dropped["http_busy"] += 1
        self.state.pipeline.rejection_log.event(
            "http_body_refused", "http_busy", reason="http_busy", max_inflight_body_bytes=limit
        )
        return web.json_response(
            {
                "error": f"busy: request bodies in flight reached {limit} bytes "
                "(http.max_inflight_body_bytes); retry"
            },
            status=503,
            headers={"Retry-After": "1"},
        )

    def _timed_out(self, seconds: float) -> web.Response:
        self.state.health.dropped["http_timeout"] += 1
        self.state.pipeline.rejection_log.event(
            "http_body_refused", "http_timeout", reason="http_timeout", body_timeout_s=seconds
        )
        resp = web.json_response(
            {"error": f"body not received within {seconds} s (http.body_timeout_s)"},
            status=408,
        )
        resp.force_close()
        return resp


CONNECTIONS = web.AppKey("connections", Connections)


def make_app(registry: CollectorRegistry, state: DaemonView) -> web.Application:
    api = Api(registry, state)
    connections = Connections(state)
    app = web.Application(
        client_max_size=state.config.http.max_body_bytes + 1,
        middlewares=[connections.middleware],
    )
    app[CONNECTIONS] = connections
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/v1/drift", api.drift)
    app.router.add_post("/v1/events", api.post_events)
    app.router.add_post("/v1/labels", api.post_labels)
    return app
