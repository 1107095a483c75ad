"""Snapshots of windows and per-bin counters in `state_dir`, so restarts lose nothing.

Each model is two files: `<model>.npz` (plain arrays, loaded with allow_pickle=False) and
`<model>.json`, a manifest with the format version, the arrays' sha256 and the baseline's
sha256. Both are written to a temporary name and renamed, the manifest last, so a reader
sees either the old pair or the new one. A snapshot is restored only when its format,
checksum, feature layout and baseline all match; otherwise it is discarded with a log line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from sidecar.errors import StateError
from sidecar.tracker import ModelTracker
from sidecar.windows import WindowSnapshot

log = structlog.get_logger("sidecar.state")

FORMAT_VERSION = 1


def safe_name(model: str) -> str:
    """A file name for a model; names from events may hold anything."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", model)[:80]
    if clean != model:
        clean += "-" + hashlib.sha256(model.encode()).hexdigest()[:8]
    return clean


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def captured_baseline_path(self, model: str) -> Path:
        return self.root / "baselines" / f"{safe_name(model)}.parquet"

    def _paths(self, model: str) -> tuple[Path, Path]:
        base = self.root / "windows" / safe_name(model)
        return base.with_suffix(".npz"), base.with_suffix(".json")

    # ---------------------------------------------------------------- save
    def save(self, trackers: Mapping[str, ModelTracker]) -> int:
        """Snapshot every model that has a baseline; returns how many were written."""
        written = 0
        for tracker in list(trackers.values()):
            if tracker.baseline is None:
                continue  # nothing restorable: windows are only compared against a baseline
            self.save_one(tracker)
            written += 1
        return written

    def save_one(self, t: ModelTracker) -> None:
        snap = t.window.snapshot()
        arrays: dict[str, np.ndarray] = {
            "numeric": snap.numeric,
            "categorical": snap.categorical,
            "predictions": snap.predictions,
            "confidence": snap.confidence,
            "received": snap.received,
        }
        for j, counts in enumerate(t.num_bins):
            arrays[f"num_bins_{j}"] = counts
        for j, counts in enumerate(t.cat_bins):
            arrays[f"cat_bins_{j}"] = counts
        if t.pred_bins is not None:
            arrays["pred_bins"] = t.pred_bins
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        data = buf.getvalue()
        manifest = {
            "format": FORMAT_VERSION,
            "model": t.name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "baseline_sha256": t.baseline.sha256,
            "numeric_names": list(t.numeric_names),
            "categorical_names": list(t.categorical_names),
            "prediction_kind": t.pred_kind,
            "window_size": t.window.capacity,
            "categorical_vocab": [v.values for v in t.cat_vocab],
            "prediction_vocab": t.pred_vocab.values if t.pred_vocab else None,
            "rows": snap.size,
        }
        npz, man = self._paths(t.name)
        _atomic_write(npz, data)
        _atomic_write(man, json.dumps(manifest).encode())

    # ---------------------------------------------------------------- restore
    def restore(self, trackers: Mapping[str, ModelTracker]) -> list[str]:
        """Refill trackers from their snapshots; returns the models restored."""
        restored = []
        for name, t in trackers.items():
            npz, man = self._paths(name)
            if not man.exists():
                continue
            try:
                self.restore_one(t, npz, man)
            except StateError as exc:
                log.warning("state_discarded", model=name, reason=str(exc))
                continue
            restored.append(name)
        return restored

    def restore_one(self, t: ModelTracker, npz: Path, man: Path) -> None:
        try:
            manifest: dict[str, Any] = json.loads(man.read_text())
            data = npz.read_bytes()
        except (OSError, ValueError) as exc:
            raise StateError(f"{man}: unreadable ({exc})") from exc
        if manifest.get("format") != FORMAT_VERSION:
            raise StateError(f"{man}: format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
        if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            raise StateError(f"{npz}: checksum mismatch")
        if t.baseline is None or manifest.get("baseline_sha256") != t.baseline.sha256:
            raise StateError("baseline changed since the snapshot")
        layout = (list(t.numeric_names), list(t.categorical_names), t.pred_kind)
        saved = (manifest["numeric_names"], manifest["categorical_names"],
                 manifest["prediction_kind"])
        if layout != saved:
            raise StateError("feature layout changed since the snapshot")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise StateError(f"{npz}: unreadable arrays ({exc})") from exc
        # Vocabulary codes in the window refer to the saved order: restore it first.
        for vocab, values in zip(t.cat_vocab, manifest["categorical_vocab"], strict=True):
            _restore_vocab(vocab, values)
        if t.pred_vocab is not None and manifest.get("prediction_vocab") is not None:
            _restore_vocab(t.pred_vocab, manifest["prediction_vocab"])
        t.window.restore(
            WindowSnapshot(
                numeric=arrays["numeric"],
                categorical=arrays["categorical"],
                predictions=arrays["predictions"],
                confidence=arrays["confidence"],
                received=arrays["received"],
            )
        )
        for j in range(len(t.num_bins)):
            t.num_bins[j] = arrays[f"num_bins_{j}"].astype(np.int64)
        for j in range(len(t.cat_bins)):
            t.cat_bins[j] = arrays[f"cat_bins_{j}"].astype(np.int64)
        if t.pred_bins is not None and "pred_bins" in arrays:
            t.pred_bins = arrays["pred_bins"].astype(np.int64)


def _restore_vocab(vocab: Any, values: list[str]) -> None:
    vocab.index = {}
    vocab.values = []
    for v in values:
        vocab.code(v)
    if vocab.values != values:
        raise StateError("category vocabulary does not fit the configured cap")
