"""The aiohttp app: /metrics, /healthz, /readyz, /v1/drift and POST /v1/events."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from sidecar.config import Config
from sidecar.events import decode_body
from sidecar.exposition import render, restrict
from sidecar.metrics import Health
from sidecar.pipeline import Pipeline


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


class Api:
    """The handlers; the daemon passes in what they read, never a global."""

    def __init__(
        self,
        registry: CollectorRegistry,
        state: DaemonView,
    ) -> None:
        self.registry = registry
        self.state = state

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        # `name[]=...` keeps only those samples, as prometheus_client's own exposition does;
        # a poller that wants one counter then pays for formatting one counter.
        names = set(request.query.getall("name[]", []))
        # Collect on the loop, where the counters are only ever touched: the families hold
        # copies of the numbers, so the scrape is one consistent snapshot. Format them on
        # the loop too, in pieces that let ingest run in between (sidecar.exposition).
        families = list(self.registry.collect())
        body = await render(restrict(families, names) if names else families, encoder, openmetrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

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
        config = self.state.config
        if not config.http.ingest_enabled:
            return web.json_response(
                {"error": "POST /v1/events is disabled (http.ingest_enabled: false)"}, status=403
            )
        if not self.state.accepting:
            return self._closed()
        limit = config.http.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._too_large(limit)
        body = bytearray()
        async for chunk in request.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > limit:
                return self._too_large(limit)
        if not self.state.accepting:  # shutdown began while the body was read
            return self._closed()
        decoded = decode_body(bytes(body), config.socket.max_batch_events)
        rejected_before = sum(self.state.health.rejected.values())
        accepted = self.state.pipeline.handle(decoded, "http")
        rejected = sum(self.state.health.rejected.values()) - rejected_before
        status = 200 if rejected == 0 else (202 if accepted else 400)
        return web.json_response(
            {
                "accepted": accepted,
                "rejected": rejected,
                "errors": [
                    {"reason": r.reason, "detail": r.detail} for r in decoded.rejections[:20]
                ],
            },
            status=status,
        )

    def _closed(self) -> web.Response:
        # Shutting down: the final snapshot may already be written, so accepting now
        # could acknowledge events that are then lost. The client retries elsewhere.
        return web.json_response({"error": "shutting down"}, status=503)

    def _too_large(self, limit: int) -> web.Response:
        self.state.pipeline.reject("body_too_large", f"body over {limit} bytes")
        return web.json_response({"error": f"body larger than {limit} bytes"}, status=413)


def make_app(registry: CollectorRegistry, state: DaemonView) -> web.Application:
    api = Api(registry, state)
    app = web.Application(client_max_size=state.config.http.max_body_bytes + 1)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/v1/drift", api.drift)
    app.router.add_post("/v1/events", api.post_events)
    return app
