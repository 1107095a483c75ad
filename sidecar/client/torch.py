"""PyTorch helpers: record a batch of logits or probabilities in one call, report GPU memory.

Needs the `torch` extra (`pip install 'drift-sidecar[torch]'`); `sidecar.client` itself
never imports torch.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only where torch is absent
    raise ImportError(
        "sidecar.client.torch needs PyTorch; install it with "
        "`pip install 'drift-sidecar[torch]'` (or any torch build for your platform)"
    ) from exc

from sidecar.client._sink import Sink

__all__ = [
    "CudaMemoryReporter",
    "module_memory_bytes",
    "record_batch",
    "report_cuda_memory",
    "report_module_memory",
]


def record_batch(
    monitor: Sink,
    outputs: torch.Tensor,
    *,
    features: Sequence[Mapping[str, Any]] | torch.Tensor | Any | None = None,
    feature_names: Sequence[str] | None = None,
    from_logits: bool = True,
    class_names: Sequence[str] | None = None,
    latency_s: float | Sequence[float] | None = None,
    ids: Sequence[str] | None = None,
    status: str = "success",
    trace_id: str | None = None,
    embeddings: torch.Tensor | Any | None = None,
    stages: Mapping[str, float] | None = None,
) -> int:
    """Record one event per row of `outputs`: predicted class, confidence, probabilities.

    `outputs` is (batch, classes) logits (`from_logits=True`, softmax applied) or
    probabilities; a 1-D (batch,) tensor is a binary model's positive-class logit or
    probability. `features` is a list of mappings, or a (batch, n) tensor or array with
    `feature_names`. `latency_s` is the batch's latency (each row waited that long) or
    one value per row. The tensor math runs here (moving results to the CPU waits for
    the GPU); conversion to events runs on the flusher thread. Returns how many events
    were buffered; bad shapes are counted as `invalid_input`, never raised.
    `embeddings` is a (batch, dim) tensor (the penultimate layer, say) or array: copied to
    the CPU as float32 here, one event's `embedding` per row. `stages` is the batch's
    seconds per stage ({"inference": 0.012}), each row's as `latency_s` is.
    """
    try:
        with torch.no_grad():
            out = outputs.detach().float()
            if out.ndim == 1:
                p1 = torch.sigmoid(out) if from_logits else out
                probs = torch.stack((1.0 - p1, p1), dim=1)
            elif out.ndim == 2:
                probs = torch.softmax(out, dim=1) if from_logits else out
            else:
                monitor.note_invalid(
                    f"torch.record_batch: outputs must be 1-D or 2-D, got shape {tuple(out.shape)}"
                )
                return 0
            conf, pred = probs.max(dim=1)
            probs, conf, pred = probs.cpu(), conf.clamp(0.0, 1.0).cpu(), pred.cpu()
            feats: Any = features
            if isinstance(features, torch.Tensor):
                # A copy, so the caller may reuse its input buffer at once.
                feats = features.detach().to("cpu", copy=True)
            embs: Any = embeddings
            if isinstance(embeddings, torch.Tensor):
                embs = embeddings.detach().to("cpu", dtype=torch.float32, copy=True)
        return monitor.record_batch(
            predictions=pred,
            probabilities=probs,
            confidences=conf,
            features=feats,
            feature_names=feature_names,
            class_names=class_names,
            latency_s=latency_s,
            ids=ids,
            status=status,
            trace_id=trace_id,
            embeddings=embs,
            stages=stages,
        )
    except Exception as exc:
        monitor.note_invalid(f"torch.record_batch: {type(exc).__name__}: {exc}")
        return 0


def module_memory_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (on whatever device they live)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def report_module_memory(monitor: Sink, module: torch.nn.Module) -> bool:
    """Report a module's parameter and buffer bytes as `ml_model_memory_bytes`."""
    return monitor.report_model_memory(module_memory_bytes(module))


def report_cuda_memory(monitor: Sink, device: torch.device | int | str | None = None) -> bool:
    """Report `torch.cuda.memory_allocated(device)`; False (nothing sent) without CUDA."""
    try:
        if not torch.cuda.is_available():
            return False
        return monitor.report_model_memory(int(torch.cuda.memory_allocated(device)))
    except Exception as exc:
        monitor.note_invalid(f"torch.report_cuda_memory: {type(exc).__name__}: {exc}")
        return False


class CudaMemoryReporter:
    """Reports CUDA memory every `interval_s` seconds from a daemon thread, until stop().

    Without CUDA nothing starts and `active` is False.
    """

    def __init__(
        self,
        monitor: Sink,
        interval_s: float = 15.0,
        device: torch.device | int | str | None = None,
    ) -> None:
        self.monitor = monitor
        self.interval_s = interval_s
        self.device = device
        self._stop = threading.Event()
        self.active = torch.cuda.is_available()
        self._thread: threading.Thread | None = None
        if self.active:
            self._thread = threading.Thread(
                target=self._run, name="drift-sidecar-cuda-memory", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            report_cuda_memory(self.monitor, self.device)
            self._stop.wait(self.interval_s)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop reporting; the last value stays with the sidecar."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self.active = False
