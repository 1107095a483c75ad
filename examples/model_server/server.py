"""A small aiohttp model server whose /predict is instrumented with sidecar.client.

The model is a 2-layer MLP defined below with a fixed seed (no weights to download), over
the four iris measurements. Each request becomes one event on the drift sidecar's socket,
with the seconds of its preprocess, inference and postprocess stages (`stages`);
OpenTelemetry spans cover the same stages when opentelemetry is installed, and the client
attaches their trace id to the event.

    python examples/model_server/server.py --socket ./drift-sidecar.sock --port 8080
    curl -s localhost:8080/predict -d '{"features": {"sepal_length": 5.1, ...}}'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from aiohttp import web

from sidecar.client import Monitor, default_socket_path
from sidecar.client.torch import record_batch, report_module_memory

try:
    from opentelemetry import trace as _otel_trace
except ImportError:  # optional: spans are no-ops without opentelemetry
    _otel_trace = None  # type: ignore[assignment]

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASSES = ("setosa", "versicolor", "virginica")
MODEL_NAME = "iris-mlp"
MODEL_VERSION = "1"
MAX_INSTANCES = 1024

MONITOR_KEY: web.AppKey[Monitor | None] = web.AppKey("monitor")
MODEL_KEY: web.AppKey[torch.nn.Module] = web.AppKey("model")

log = logging.getLogger("model_server")


class BadRequest(Exception):
    """The request body is not what /predict expects; the message says what is wrong."""


def build_model(seed: int = 0) -> torch.nn.Module:
    """The tiny classifier: 4 inputs, 16 hidden units, 3 classes; same weights every run."""
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(len(FEATURES), 16), torch.nn.ReLU(), torch.nn.Linear(16, len(CLASSES))
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """An OpenTelemetry span when opentelemetry is installed, else nothing."""
    if _otel_trace is None:
        yield
        return
    with _otel_trace.get_tracer("model_server").start_as_current_span(name) as s:
        for key, value in attributes.items():
            s.set_attribute(key, value)
        yield


@contextlib.contextmanager
def stage(stages: dict[str, float], name: str, **attributes: Any) -> Iterator[None]:
    """Time one stage of the request into `stages` (the event's), inside its span."""
    t0 = time.perf_counter()
    try:
        with span(name, **attributes):
            yield
    finally:
        stages[name] = time.perf_counter() - t0


def parse_rows(body: Any) -> tuple[list[dict[str, float]], bool]:
    """`{"features": {...}}` or `{"instances": [{...}, ...]}` to rows of floats, and which."""
    if not isinstance(body, Mapping):
        raise BadRequest("body must be a JSON object")
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not 0 < len(rows) <= MAX_INSTANCES:
            raise BadRequest(f"instances must be a list of 1 to {MAX_INSTANCES} objects")
    elif "features" in body:
        rows = [body["features"]]
    else:
        raise BadRequest("expected 'features' or 'instances'")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise BadRequest(f"instance {i} must be an object")
        try:
            out.append({name: float(row[name]) for name in FEATURES})
        except KeyError as exc:
            raise BadRequest(f"instance {i} lacks feature {exc.args[0]!r}") from None
        except (TypeError, ValueError):
            raise BadRequest(f"instance {i} has a non-numeric feature") from None
    return out, "instances" in body


def postprocess(probs: torch.Tensor) -> list[dict[str, Any]]:
    conf, idx = probs.max(dim=1)
    return [
        {
            "prediction": CLASSES[k],
            "confidence": c,
            "probabilities": dict(zip(CLASSES, p, strict=True)),
        }
        for k, c, p in zip(idx.tolist(), conf.tolist(), probs.tolist(), strict=True)
    ]


async def predict(request: web.Request) -> web.Response:
    monitor = request.app[MONITOR_KEY]
    model = request.app[MODEL_KEY]
    request_id = request.headers.get("x-request-id")
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    with span("prediction", **{"model.name": MODEL_NAME, "model.version": MODEL_VERSION}):
        try:
            with stage(stages, "preprocess"):
                rows, batched = parse_rows(await request.json())
                x = torch.tensor([[r[n] for n in FEATURES] for r in rows])
            with stage(stages, "inference", batch_size=len(rows)), torch.no_grad():
                logits = model(x)
            with stage(stages, "postprocess"):
                probs = torch.softmax(logits, dim=1)
                results = postprocess(probs)
        except (BadRequest, ValueError) as exc:
            # Bad input is the caller's error, not the model's; still an errored request.
            if monitor is not None:
                monitor.record(
                    latency_s=time.perf_counter() - t0,
                    status="error",
                    id=request_id,
                    stages=stages,
                )
            return web.json_response({"error": str(exc)}, status=400)
        if monitor is not None:
            latency = time.perf_counter() - t0
            if len(rows) == 1:
                r = results[0]
                monitor.record(
                    rows[0],
                    prediction=r["prediction"],
                    probabilities=r["probabilities"],
                    confidence=r["confidence"],
                    latency_s=latency,
                    id=request_id,
                    stages=stages,
                )
            else:
                record_batch(
                    monitor,
                    probs,
                    from_logits=False,
                    features=rows,
                    class_names=CLASSES,
                    latency_s=latency,
                    stages=stages,
                )
    if batched:
        return web.json_response({"predictions": results})
    return web.json_response(results[0])


async def healthz(request: web.Request) -> web.Response:
    monitor = request.app[MONITOR_KEY]
    body: dict[str, Any] = {"status": "ok", "model": MODEL_NAME}
    if monitor is not None:
        s = monitor.stats
        body["sidecar"] = {"connected": s.connected, "sent": s.sent, "dropped": s.dropped}
    return web.json_response(body)


def create_app(monitor: Monitor | None, model: torch.nn.Module | None = None) -> web.Application:
    """The aiohttp app; `monitor=None` serves the same model without the client."""
    app = web.Application()
    app[MONITOR_KEY] = monitor
    app[MODEL_KEY] = model if model is not None else build_model()
    app.router.add_post("/predict", predict)
    app.router.add_get("/healthz", healthz)
    if monitor is not None:
        report_module_memory(monitor, app[MODEL_KEY])
    return app


async def serve(args: argparse.Namespace) -> None:
    monitor = (
        None
        if args.no_monitor
        else Monitor(args.socket, model=args.model, version=args.model_version)
    )
    runner = web.AppRunner(create_app(monitor), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"model server on http://{args.host}:{args.port}/predict", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        if monitor is not None:
            monitor.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", default=default_socket_path(), help="drift sidecar event socket")
    p.add_argument("--model", default=MODEL_NAME, help="model name sent with each event")
    p.add_argument("--model-version", default=MODEL_VERSION, help="model version label")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--no-monitor", action="store_true", help="serve without the client")
    p.add_argument("--torch-threads", type=int, default=1, help="intra-op threads for torch")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.torch_threads)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
