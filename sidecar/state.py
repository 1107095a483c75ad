"""Snapshots of windows and per-bin counters in `state_dir`, so restarts lose nothing.

Each model is two files in `windows/`: `<model>.<sha>.npz` (plain arrays, loaded with
allow_pickle=False, named by the first hex digits of their sha256) and `<model>.json`, a
manifest with the format version, the arrays' file name and full sha256, and the baseline's
sha256. The arrays are written first under their new name, then the manifest replaces the
old one atomically, then stale arrays are removed: a crash at any point leaves a manifest
that names complete arrays, so a kill -9 costs at most one snapshot interval.

A model with embedding drift also keeps its embedding window there: `embedding` (rows of
float32, as the window holds them) and `embedding_received`, in the same arrays file, with
the manifest at format 3 and the dimension in `embedding_dim`. A model without it writes
format 2, as before, and a format-2 snapshot of a model that has embedding drift now
restores its event window with an empty embedding window.

A snapshot is restored only when its format, checksum, feature layout, shapes and baseline
all match; otherwise it is discarded with a log line and the model starts empty. Nothing is
changed in a tracker until the whole snapshot has been checked. The embedding window alone
is dropped, with a `state_embedding_discarded` line, when its dimension is no longer the
configured one or the model no longer has embedding drift: the event window is still
restored.

Taking a snapshot is split in two: `collect` copies the arrays and runs on the event loop
(trackers are only ever touched there), `write` serializes and writes them in a thread.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from sidecar.errors import StateError
from sidecar.files import write_atomically
from sidecar.fsutil import read_regular, set_aside
from sidecar.statefiles import MAX_JSON_BYTES, decode_json, legacy_name, read_npz, state_name
from sidecar.tracker import ModelTracker
from sidecar.vocab import Vocab
from sidecar.windows import WindowSnapshot

log = structlog.get_logger("sidecar.state")

FORMAT_VERSION = 2
"""2: arrays in a content-named file the manifest points to (1 had a fixed name, so a crash
between the two renames could pair new arrays with an old manifest)."""
EMBEDDING_FORMAT_VERSION = 3
"""3: format 2 plus the embedding window (`embedding`, `embedding_received`). Only models with
embedding drift write it, so that an earlier version still restores every other model, and
refuses this one by its format (with a log line) instead of setting the file aside."""
_FORMATS = (FORMAT_VERSION, EMBEDDING_FORMAT_VERSION)
_MAX_EMBEDDING_DIM = 65_536
"""As `models[].embedding.dim` allows."""

_SHA_PREFIX = 16


def safe_name(model: str) -> str:
    """A file name for a model; names from events may hold anything (see `state_name`)."""
    return state_name(model)


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

    def write_file(self, name: str, data: bytes) -> None:
        """Write one file of the state folder's top level, atomically."""
        write_atomically(self.root / name, lambda fh: fh.write(data), dir_mode=0o750)

    # ---------------------------------------------------------------- save
    def save(self, trackers: Mapping[str, ModelTracker]) -> int:
        """Collect and write in one call; only for callers on the event loop's thread."""
        return self.write(self.collect(trackers))

    def collect(self, trackers: Mapping[str, ModelTracker]) -> list[Snapshot]:
        """Copy every model that has a baseline (windows only mean something against one)."""
        return [collect_one(t) for t in list(trackers.values()) if t.baseline is not None]

    def write(self, snapshots: list[Snapshot]) -> int:
        """Write collected snapshots; returns how many were written. One model's failure
        (a full disk, a read-only folder) does not stop the others: the first error is
        raised once all were tried."""
        first: Exception | None = None
        written = 0
        for snap in snapshots:
            try:
                self.write_one(snap)
            except Exception as exc:
                first = first or exc
            else:
                written += 1
        if first is not None:
            raise first
        return written

    def write_one(self, snap: Snapshot) -> None:
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **snap.arrays)
        # A view, not getvalue()'s copy: with an embedding window the file is tens of MB.
        data = buf.getbuffer()
        digest = hashlib.sha256(data).hexdigest()
        stem = safe_name(snap.model)
        arrays_name = f"{stem}.{digest[:_SHA_PREFIX]}.npz"
        manifest = {**snap.manifest, "sha256": digest, "arrays": arrays_name}
        folder = self.root / "windows"
        write_atomically(folder / arrays_name, lambda fh: fh.write(data), dir_mode=0o750)
        text = json.dumps(manifest).encode()
        write_atomically(self.manifest_path(snap.model), lambda fh: fh.write(text), dir_mode=0o750)
        stale = re.compile(re.escape(stem) + rf"\.[0-9a-f]{{{_SHA_PREFIX}}}\.npz")
        with os.scandir(folder) as entries:
            for old in entries:
                # Only regular files of this model's own arrays pattern; a set-aside file
                # (`.corrupt-...`) or anything else in the folder is left alone.
                if (
                    old.name != arrays_name
                    and stale.fullmatch(old.name)
                    and old.is_file(follow_symlinks=False)
                ):
                    Path(old.path).unlink(missing_ok=True)

    # ---------------------------------------------------------------- restore
    def restore(self, trackers: Mapping[str, ModelTracker]) -> list[str]:
        """Refill trackers from their snapshots; returns the models restored. Never raises:
        a snapshot that cannot be used is discarded (and set aside when it cannot be
        trusted), and the model starts empty."""
        restored = []
        for name, t in trackers.items():
            man = self.manifest_path(name)
            legacy = self.root / "windows" / f"{legacy_name(name)}.json"
            if not os.path.lexists(man):
                if legacy == man or not os.path.lexists(legacy):
                    continue
                man = legacy  # written by an earlier version: used if it names this model
            try:
                rows = self.restore_one(t, man)
            except StateError as exc:
                # An earlier version's file is only ever read, never moved.
                is_legacy = man != self.manifest_path(name)
                self._discard(name, str(exc), exc.bad_file, keep=is_legacy)
                continue
            except Exception as exc:  # a defect, not the file: still start, and say so
                log.error("state_discarded", model=name, reason=repr(exc)[:300], exc_info=exc)
                continue
            extra = {}
            if t.embedding_window is not None:
                extra["embedding_rows"] = len(t.embedding_window)
            log.info("state_restored", model=name, rows=rows, **extra)
            restored.append(name)
        return restored

    def _discard(self, model: str, reason: str, bad: Path | None, keep: bool) -> None:
        aside = set_aside(bad) if bad is not None and not keep else None
        log.warning(
            "state_discarded",
            model=model,
            reason=reason,
            **({"moved_to": str(aside)} if aside is not None else {}),
        )

    def restore_one(self, t: ModelTracker, man: Path) -> int:
        """Check the whole snapshot, then install it; returns the window rows restored.

        Files are read only as regular files of bounded size (no symlink, FIFO or device),
        and every array's shape is checked against its bytes before anything is allocated.
        """
        manifest = decode_json(read_regular(man, MAX_JSON_BYTES), man)
        if not isinstance(manifest, dict):
            raise StateError(f"{man}: not a manifest object", bad_file=man)
        fmt = manifest.get("format")
        if fmt not in _FORMATS or type(fmt) is not int:
            raise StateError(f"{man}: format {fmt!r:.40}, expected one of {_FORMATS}")
        if manifest.get("model") != t.name:
            raise StateError(f"{man}: the snapshot of another model")
        rows = manifest.get("rows")
        if type(rows) is not int or not 0 <= rows <= 4 * t.window.capacity:
            raise StateError(f"{man}: rows {rows!r:.40} out of range", bad_file=man)
        if t.baseline is None or manifest.get("baseline_sha256") != t.baseline.sha256:
            raise StateError("baseline changed since the snapshot")
        layout = [list(t.numeric_names), list(t.categorical_names), t.pred_kind]
        saved = [
            manifest.get("numeric_names"),
            manifest.get("categorical_names"),
            manifest.get("prediction_kind"),
        ]
        if layout != saved:
            raise StateError("feature layout changed since the snapshot")
        emb = _saved_embedding(manifest, t, man) if fmt == EMBEDDING_FORMAT_VERSION else None
        npz = self.arrays_path(t.name, manifest)
        data = read_regular(npz, _max_arrays_bytes(t, rows, emb))
        if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            raise StateError(f"{npz}: checksum mismatch", bad_file=npz)
        names = _array_names(t) | (_EMBEDDING_ARRAYS if emb is not None else set())
        arrays = read_npz(data, names, npz)
        try:
            plan = _plan(t, manifest, arrays, emb)
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            raise StateError(f"{npz}: does not fit the model ({exc!r})") from exc
        _install(t, plan)
        if plan.embedding_dropped is not None:
            log.warning(
                "state_embedding_discarded",
                model=t.name,
                reason=plan.embedding_dropped,
                rows=emb[1] if emb is not None else 0,
                kept="the event window and per-bin counters",
            )
        return plan.window.size


_EMBEDDING_ARRAYS = frozenset({"embedding", "embedding_received"})


def _saved_embedding(manifest: Mapping[str, Any], t: ModelTracker, man: Path) -> tuple[int, int]:
    """(dim, rows) of a format-3 snapshot's embedding window, checked for range."""
    dim, rows = manifest.get("embedding_dim"), manifest.get("embedding_rows")
    if type(dim) is not int or not 1 <= dim <= _MAX_EMBEDDING_DIM:
        raise StateError(f"{man}: embedding_dim {dim!r:.40} out of range", bad_file=man)
    if type(rows) is not int or not 0 <= rows <= 4 * t.window.capacity:
        raise StateError(f"{man}: embedding_rows {rows!r:.40} out of range", bad_file=man)
    return dim, rows


def _array_names(t: ModelTracker) -> set[str]:
    names = {"numeric", "categorical", "predictions", "confidence", "received", "pred_bins"}
    names.update(f"num_bins_{j}" for j in range(len(t.numeric_names)))
    names.update(f"cat_bins_{j}" for j in range(len(t.categorical_names)))
    return names


def _max_arrays_bytes(t: ModelTracker, rows: int, emb: tuple[int, int] | None = None) -> int:
    """What the arrays of `rows` window rows can weigh, at 8 bytes a value, plus headers,
    and `emb`'s (dim, rows) embedding rows at 4 bytes a value and 8 for the time."""
    per_row = 8 * (len(t.numeric_names) + len(t.categorical_names) + 3)
    cap = 4 * t.drift.max_categories + 1
    bins = (
        sum(len(b) for b in t.num_bins)
        + cap * (len(t.categorical_names) + 1)
        + 64 * (len(t.numeric_names) + 1)
    )
    emb_bytes = emb[1] * (4 * emb[0] + 8) if emb is not None else 0
    return rows * per_row + 8 * bins + emb_bytes + 4096 * (len(_array_names(t)) + 3)


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
    ew = t.embedding_window
    if ew is not None:
        # float32 as the window holds them: 4 bytes a value, as compact as the data
        arrays["embedding"] = ew.snapshot()
        arrays["embedding_received"] = ew.received()
        manifest["format"] = EMBEDDING_FORMAT_VERSION
        manifest["embedding_dim"] = ew.dim
        manifest["embedding_rows"] = len(ew)
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
    embedding: tuple[np.ndarray, np.ndarray] | None = None
    """The embedding window's rows and receive times, to restore."""
    embedding_dropped: str | None = None
    """Why a saved embedding window is not restored (the rest of the snapshot is)."""


def _plan(
    t: ModelTracker,
    manifest: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    emb: tuple[int, int] | None = None,
) -> _Plan:
    n = int(manifest["rows"])
    k_num, k_cat = len(t.numeric_names), len(t.categorical_names)
    numeric = _shaped(arrays["numeric"], (n, k_num), np.float64, "numeric")
    categorical = _shaped(arrays["categorical"], (n, k_cat), np.int32, "categorical")
    cat_pred = t.pred_vocab is not None
    predictions = _shaped(
        arrays["predictions"], (n,), np.int32 if cat_pred else np.float64, "predictions"
    )
    confidence = _shaped(arrays["confidence"], (n,), np.float64, "confidence")
    received = _shaped(arrays["received"], (n,), np.float64, "received")

    cat_vocab = [
        _vocab_values(v, vocab)
        for v, vocab in zip(manifest["categorical_vocab"], t.cat_vocab, strict=True)
    ]
    pred_vocab = None
    if t.pred_vocab is not None:
        pred_vocab = _vocab_values(manifest["prediction_vocab"], t.pred_vocab)
    for j, vocab in enumerate(t.cat_vocab):
        _codes_fit(categorical[:, j], vocab.cap, f"categorical[:, {j}]")
    if t.pred_vocab is not None:
        _codes_fit(predictions, t.pred_vocab.cap, "predictions")

    num_bins = [
        _shaped(arrays[f"num_bins_{j}"], b.shape, np.int64, f"num_bins_{j}")
        for j, b in enumerate(t.num_bins)
    ]
    cat_bins = [
        _shaped(arrays[f"cat_bins_{j}"], b.shape, np.int64, f"cat_bins_{j}")
        for j, b in enumerate(t.cat_bins)
    ]
    pred_bins = None
    if t.pred_bins is not None:
        pred_bins = _shaped(arrays["pred_bins"], t.pred_bins.shape, np.int64, "pred_bins")
    window = WindowSnapshot(numeric, categorical, predictions, confidence, received)
    embedding, dropped = _plan_embedding(t, arrays, emb)
    return _Plan(window, cat_vocab, pred_vocab, num_bins, cat_bins, pred_bins, embedding, dropped)


def _plan_embedding(
    t: ModelTracker, arrays: Mapping[str, np.ndarray], emb: tuple[int, int] | None
) -> tuple[tuple[np.ndarray, np.ndarray] | None, str | None]:
    """The saved embedding window, checked against its own manifest (a file that does not
    match it is not one this sidecar wrote: ValueError), then against the config (a
    dimension that changed only drops it: the reason comes back)."""
    if emb is None:
        return None, None
    dim, n = emb
    rows = arrays["embedding"]
    if rows.shape != (n, dim) or rows.dtype != np.float32:
        raise ValueError(
            f"embedding: shape {rows.shape} {rows.dtype}, expected ({n}, {dim}) float32"
        )
    received = _shaped(arrays["embedding_received"], (n,), np.float64, "embedding_received")
    if not np.isfinite(rows).all():
        raise ValueError("embedding: a value that is not finite")
    if t.embedding_window is None:
        return None, "the model no longer has embedding drift configured"
    if dim != t.embedding_window.dim:
        return None, f"embedding dim {dim} in the snapshot, {t.embedding_window.dim} configured"
    return (rows, received), None


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
    if t.embedding_window is not None:
        rows, received = plan.embedding or (
            np.empty((0, t.embedding_window.dim), np.float32),
            np.empty(0),
        )
        t.embedding_window.restore(rows, received)


def _set_vocab(vocab: Vocab, values: list[str]) -> None:
    vocab.index = {v: i for i, v in enumerate(values)}
    vocab.values = list(values)
