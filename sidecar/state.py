"""Snapshots of windows and per-bin counters in `state_dir`, so restarts lose nothing.

Each model is two files in `windows/`: `<model>.<sha>.npz` (plain arrays, loaded with
allow_pickle=False, named by the first hex digits of their sha256) and `<model>.json`, a
manifest with the format version, the arrays' file name and full sha256, and the baseline's
sha256. The arrays are written first under their new name, then the manifest replaces the
old one atomically, then stale arrays are removed: a crash at any point leaves a manifest
that names complete arrays, so a kill -9 costs at most one snapshot interval.

A snapshot is restored only when its format, checksum, feature layout, shapes and baseline
all match; otherwise it is discarded with a log line and the model starts empty. Nothing is
changed in a tracker until the whole snapshot has been checked.

Taking a snapshot is split in two: `collect` copies the arrays and runs on the event loop
(trackers are only ever touched there), `write` serializes and writes them in a thread.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from sidecar.errors import StateError
from sidecar.files import write_atomically
from sidecar.tracker import ModelTracker, Vocab
from sidecar.windows import WindowSnapshot

log = structlog.get_logger("sidecar.state")

FORMAT_VERSION = 2
"""2: arrays in a content-named file the manifest points to (1 had a fixed name, so a crash
between the two renames could pair new arrays with an old manifest)."""

_SHA_PREFIX = 16


def safe_name(model: str) -> str:
    """A file name for a model; names from events may hold anything."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", model)[:80]
    if clean != model:
        clean += "-" + hashlib.sha256(model.encode()).hexdigest()[:8]
    return clean


@dataclass(frozen=True)
class Snapshot:
    """One model's state, copied on the event loop; safe to serialize in a thread."""

    model: str
    arrays: dict[str, np.ndarray]
    manifest: dict[str, Any]


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def captured_baseline_path(self, model: str) -> Path:
        return self.root / "baselines" / f"{safe_name(model)}.parquet"

    def manifest_path(self, model: str) -> Path:
        return self.root / "windows" / f"{safe_name(model)}.json"

    def arrays_path(self, model: str, manifest: Mapping[str, Any]) -> Path:
        """The arrays file a manifest names; only a bare file name inside `windows/`."""
        name = manifest.get("arrays")
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".npz"):
            raise StateError(f"{self.manifest_path(model)}: no valid `arrays` file name")
        return self.root / "windows" / name

    # ---------------------------------------------------------------- save
    def save(self, trackers: Mapping[str, ModelTracker]) -> int:
        """Collect and write in one call; only for callers on the event loop's thread."""
        return self.write(self.collect(trackers))

    def collect(self, trackers: Mapping[str, ModelTracker]) -> list[Snapshot]:
        """Copy every model that has a baseline (windows only mean something against one)."""
        return [collect_one(t) for t in list(trackers.values()) if t.baseline is not None]

    def write(self, snapshots: list[Snapshot]) -> int:
        """Write collected snapshots; returns how many were written."""
        for snap in snapshots:
            self.write_one(snap)
        return len(snapshots)

    def write_one(self, snap: Snapshot) -> None:
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **snap.arrays)
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        stem = safe_name(snap.model)
        arrays_name = f"{stem}.{digest[:_SHA_PREFIX]}.npz"
        manifest = {**snap.manifest, "sha256": digest, "arrays": arrays_name}
        folder = self.root / "windows"
        write_atomically(folder / arrays_name, lambda fh: fh.write(data), dir_mode=0o750)
        text = json.dumps(manifest).encode()
        write_atomically(self.manifest_path(snap.model), lambda fh: fh.write(text), dir_mode=0o750)
        stale = re.compile(re.escape(stem) + rf"\.[0-9a-f]{{{_SHA_PREFIX}}}\.npz")
        for old in folder.iterdir():
            if old.name != arrays_name and stale.fullmatch(old.name):
                old.unlink(missing_ok=True)

    # ---------------------------------------------------------------- restore
    def restore(self, trackers: Mapping[str, ModelTracker]) -> list[str]:
        """Refill trackers from their snapshots; returns the models restored."""
        restored = []
        for name, t in trackers.items():
            man = self.manifest_path(name)
            if not man.exists():
                continue
            try:
                rows = self.restore_one(t, man)
            except StateError as exc:
                log.warning("state_discarded", model=name, reason=str(exc))
                continue
            log.info("state_restored", model=name, rows=rows)
            restored.append(name)
        return restored

    def restore_one(self, t: ModelTracker, man: Path) -> int:
        """Check the whole snapshot, then install it; returns the window rows restored."""
        try:
            manifest = json.loads(man.read_text())
        except (OSError, ValueError) as exc:
            raise StateError(f"{man}: unreadable ({exc})") from exc
        if not isinstance(manifest, dict):
            raise StateError(f"{man}: not a manifest object")
        if manifest.get("format") != FORMAT_VERSION:
            raise StateError(f"{man}: format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
        npz = self.arrays_path(t.name, manifest)
        try:
            data = npz.read_bytes()
        except OSError as exc:
            raise StateError(f"{npz}: unreadable ({exc.strerror or exc})") from exc
        if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            raise StateError(f"{npz}: checksum mismatch")
        if t.baseline is None or manifest.get("baseline_sha256") != t.baseline.sha256:
            raise StateError("baseline changed since the snapshot")
        layout = [list(t.numeric_names), list(t.categorical_names), t.pred_kind]
        saved = [manifest.get("numeric_names"), manifest.get("categorical_names"),
                 manifest.get("prediction_kind")]
        if layout != saved:
            raise StateError("feature layout changed since the snapshot")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise StateError(f"{npz}: unreadable arrays ({exc})") from exc
        try:
            plan = _plan(t, manifest, arrays)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StateError(f"{npz}: does not fit the model ({exc!r})") from exc
        _install(t, plan)
        return plan.window.size


def collect_one(t: ModelTracker) -> Snapshot:
    assert t.baseline is not None, "only models with a baseline have state to keep"
    snap = t.window.snapshot()  # copies
    arrays: dict[str, np.ndarray] = {
        "numeric": snap.numeric,
        "categorical": snap.categorical,
        "predictions": snap.predictions,
        "confidence": snap.confidence,
        "received": snap.received,
    }
    for j, counts in enumerate(t.num_bins):
        arrays[f"num_bins_{j}"] = counts.copy()
    for j, counts in enumerate(t.cat_bins):
        arrays[f"cat_bins_{j}"] = counts.copy()
    if t.pred_bins is not None:
        arrays["pred_bins"] = t.pred_bins.copy()
    manifest = {
        "format": FORMAT_VERSION,
        "model": t.name,
        "baseline_sha256": t.baseline.sha256,
        "numeric_names": list(t.numeric_names),
        "categorical_names": list(t.categorical_names),
        "prediction_kind": t.pred_kind,
        "window_size": t.window.capacity,
        "categorical_vocab": [list(v.values) for v in t.cat_vocab],
        "prediction_vocab": list(t.pred_vocab.values) if t.pred_vocab else None,
        "rows": snap.size,
    }
    return Snapshot(t.name, arrays, manifest)


@dataclass(frozen=True)
class _Plan:
    """A checked snapshot, ready to install without any further failure."""

    window: WindowSnapshot
    cat_vocab: list[list[str]]
    pred_vocab: list[str] | None
    num_bins: list[np.ndarray]
    cat_bins: list[np.ndarray]
    pred_bins: np.ndarray | None


def _plan(t: ModelTracker, manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> _Plan:
    n = int(manifest["rows"])
    k_num, k_cat = len(t.numeric_names), len(t.categorical_names)
    numeric = _shaped(arrays["numeric"], (n, k_num), np.float64, "numeric")
    categorical = _shaped(arrays["categorical"], (n, k_cat), np.int32, "categorical")
    cat_pred = t.pred_vocab is not None
    predictions = _shaped(arrays["predictions"], (n,), np.int32 if cat_pred else np.float64,
                          "predictions")
    confidence = _shaped(arrays["confidence"], (n,), np.float64, "confidence")
    received = _shaped(arrays["received"], (n,), np.float64, "received")

    cat_vocab = [_vocab_values(v, vocab) for v, vocab in
                 zip(manifest["categorical_vocab"], t.cat_vocab, strict=True)]
    pred_vocab = None
    if t.pred_vocab is not None:
        pred_vocab = _vocab_values(manifest["prediction_vocab"], t.pred_vocab)
    for j, vocab in enumerate(t.cat_vocab):
        _codes_fit(categorical[:, j], vocab.cap, f"categorical[:, {j}]")
    if t.pred_vocab is not None:
        _codes_fit(predictions, t.pred_vocab.cap, "predictions")

    num_bins = [_shaped(arrays[f"num_bins_{j}"], b.shape, np.int64, f"num_bins_{j}")
                for j, b in enumerate(t.num_bins)]
    cat_bins = [_shaped(arrays[f"cat_bins_{j}"], b.shape, np.int64, f"cat_bins_{j}")
                for j, b in enumerate(t.cat_bins)]
    pred_bins = None
    if t.pred_bins is not None:
        pred_bins = _shaped(arrays["pred_bins"], t.pred_bins.shape, np.int64, "pred_bins")
    window = WindowSnapshot(numeric, categorical, predictions, confidence, received)
    return _Plan(window, cat_vocab, pred_vocab, num_bins, cat_bins, pred_bins)


def _shaped(a: np.ndarray, shape: tuple[int, ...], dtype: Any, name: str) -> np.ndarray:
    if a.shape != shape:
        raise ValueError(f"{name}: shape {a.shape}, expected {shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name}: dtype {a.dtype} is not numeric")
    return a.astype(dtype)


def _codes_fit(codes: np.ndarray, cap: int, name: str) -> None:
    if codes.size and (codes.min() < -1 or codes.max() > cap):
        raise ValueError(f"{name}: codes outside -1..{cap}")


def _vocab_values(values: Any, vocab: Vocab) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError("a category vocabulary is not a list of strings")
    if len(values) > vocab.cap or len(set(values)) != len(values):
        raise ValueError("category vocabulary does not fit the configured cap")
    return values


def _install(t: ModelTracker, plan: _Plan) -> None:
    # Vocabulary codes in the window refer to the saved order: restore it first.
    for vocab, values in zip(t.cat_vocab, plan.cat_vocab, strict=True):
        _set_vocab(vocab, values)
    if t.pred_vocab is not None and plan.pred_vocab is not None:
        _set_vocab(t.pred_vocab, plan.pred_vocab)
    t.window.restore(plan.window)
    t.num_bins = plan.num_bins
    t.cat_bins = plan.cat_bins
    if plan.pred_bins is not None:
        t.pred_bins = plan.pred_bins


def _set_vocab(vocab: Vocab, values: list[str]) -> None:
    vocab.index = {v: i for i, v in enumerate(values)}
    vocab.values = list(values)
