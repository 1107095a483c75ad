"""Label state on disk: the waiting predictions in `state_dir`, and what a labeled baseline
says about the model (its accuracy and a calibration map).

The waiting predictions are one file, `labels/pending.npz` (plain arrays, read back with the
same checks as a window snapshot), written atomically at each snapshot and at SIGTERM while
predictions wait, and once more when the last is gone (an empty store and no file, or an
empty one, say the same); the model and class names the rows refer to travel in it as UTF-8
JSON bytes. A file that
cannot be trusted is set aside (never deleted) and the store starts empty.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from sidecar.errors import BaselineError, StateError
from sidecar.files import write_atomically
from sidecar.fsutil import read_regular, set_aside
from sidecar.label_store import KIND_CLASS, KIND_VALUE
from sidecar.labels import LabelBook
from sidecar.statefiles import decode_json, read_npz
from sidecar.stats.calibration import BaselinePerformance, Calibration
from sidecar.stats.reference import category_key

log = structlog.get_logger("sidecar.labels")

PENDING_FILE = Path("labels") / "pending.npz"
FORMAT_VERSION = 1
_ROW_BYTES = 8 + 2 + 4 + 8 + 1
_NAMES_BYTES = 64 << 20
_COLUMNS = ("keys", "models", "times", "values", "kinds")
LABEL_COLUMN = "label"
PROBABILITIES_COLUMN = "probabilities"
PREDICTION_COLUMN = "prediction"


@dataclass(frozen=True)
class PendingSnapshot:
    """The store's rows and names, copied on the event loop; written in a thread."""

    arrays: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(self.arrays["keys"])


def collect_pending(book: LabelBook) -> PendingSnapshot:
    names = {"format": FORMAT_VERSION, "models": book.model_names, "classes": book.class_names}
    arrays = book.store.arrays()
    arrays["names"] = np.frombuffer(json.dumps(names).encode(), dtype=np.uint8).copy()
    return PendingSnapshot(arrays)


def write_pending(root: Path, snap: PendingSnapshot) -> None:
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **snap.arrays)
    data = buf.getvalue()
    write_atomically(root / PENDING_FILE, lambda fh: fh.write(data), dir_mode=0o750)


def restore_pending(root: Path, book: LabelBook) -> int:
    """Refill `book` from its file; returns the rows restored. Never raises: a file that
    cannot be used is set aside with a log line, and the store starts empty."""
    path = root / PENDING_FILE
    try:
        limit = 1024 + _NAMES_BYTES + 2 * book.settings.max_pending * _ROW_BYTES + 4096
        data = read_regular(path, limit)
    except StateError as exc:
        if exc.bad_file is not None:
            _discard(str(exc), exc.bad_file)
        return 0
    try:
        arrays = read_npz(data, (*_COLUMNS, "names"), path)
        names = decode_json(arrays.pop("names").tobytes(), path)
        _check(arrays, names, path)
    except StateError as exc:
        _discard(str(exc), exc.bad_file)
        return 0
    book.model_names = list(names["models"])
    book._model_codes = {m: i for i, m in enumerate(book.model_names)}
    book.class_names = list(names["classes"])
    book._class_codes = {c: i for i, c in enumerate(book.class_names)}
    book.store.load(arrays)
    log.info("label_store_restored", waiting=len(book.store))
    return len(book.store)


def _check(arrays: dict[str, np.ndarray], names: Any, path: Path) -> None:
    def bad(why: str) -> StateError:
        return StateError(f"{path}: {why}", bad_file=path)

    if not isinstance(names, dict) or names.get("format") != FORMAT_VERSION:
        raise bad("not a label store of this format")
    models, classes = names.get("models"), names.get("classes")
    if not (isinstance(models, list) and all(isinstance(m, str) for m in models)):
        raise bad("no list of model names")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise bad("no list of class names")
    if set(arrays) != set(_COLUMNS):
        raise bad(f"columns {sorted(arrays)}")
    dtypes = {"keys": "u8", "models": "u2", "times": "u4", "values": "f8", "kinds": "u1"}
    n = arrays["keys"].shape
    for col, dt in dtypes.items():
        a = arrays[col]
        if a.ndim != 1 or a.shape != n or a.dtype != np.dtype(dt):
            raise bad(f"column {col}: {a.dtype} {a.shape}")
    kinds, values = arrays["kinds"], arrays["values"]
    if not np.isin(kinds, (KIND_CLASS, KIND_VALUE)).all():
        raise bad("a row of no known kind")
    if arrays["models"].size and int(arrays["models"].max()) >= len(models):
        raise bad("a row of an unknown model")
    cls = values[kinds == KIND_CLASS]
    if cls.size and not (
        (cls >= 0).all() and (cls < len(classes)).all() and (cls == np.floor(cls)).all()
    ):
        raise bad("a row of an unknown class")
    if not np.isfinite(values).all():
        raise bad("a value that is not finite")


def _discard(reason: str, bad: Path | None) -> None:
    aside = set_aside(bad) if bad is not None else None
    log.warning(
        "label_store_discarded",
        reason=reason[:300],
        **({"moved_to": str(aside)} if aside is not None else {}),
    )


# ------------------------------------------------------------------ labeled baselines


def baseline_performance(path: Path) -> BaselinePerformance | None:
    """Accuracy and calibration from a baseline's `label` column with its `probabilities`
    (a list per row, class index order) or `prediction`; None without a `label` column.
    Raises BaselineError naming the file and column when they cannot be read."""
    import pyarrow as pa  # noqa: PLC0415 - as sidecar.baseline: only when a baseline loads
    import pyarrow.parquet as pq  # noqa: PLC0415

    where = str(path)
    try:
        schema = pq.read_schema(path)
        if LABEL_COLUMN not in schema.names:
            return None
        cols = [
            c for c in (LABEL_COLUMN, PROBABILITIES_COLUMN, PREDICTION_COLUMN) if c in schema.names
        ]
        table = pq.read_table(path, columns=cols, use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BaselineError(f"baseline file {where}: cannot read its label column ({exc})") from exc
    labels = [category_key(v) for v in table.column(LABEL_COLUMN).to_pylist()]
    probs: np.ndarray | None = None
    if PROBABILITIES_COLUMN in cols:
        rows = table.column(PROBABILITIES_COLUMN).to_pylist()
        widths = {len(r) for r in rows if r is not None}
        if len(widths) != 1:
            raise BaselineError(
                f"baseline file {where}: column {PROBABILITIES_COLUMN!r} must hold lists of "
                f"one length (the classes), found lengths {sorted(widths)[:5]}"
            )
        k = widths.pop()
        probs = np.array([r if r is not None else [np.nan] * k for r in rows], dtype=np.float64)
    predicted: list[str | None]
    if PREDICTION_COLUMN in cols:
        predicted = [category_key(v) for v in table.column(PREDICTION_COLUMN).to_pylist()]
    elif probs is not None:
        arg = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1)
        ok = np.isfinite(probs).all(axis=1)
        predicted = [str(int(a)) if o else None for a, o in zip(arg, ok, strict=True)]
    else:
        return BaselinePerformance(rows=0, accuracy=None, calibration=None)
    pairs = [
        (p, y) for p, y in zip(predicted, labels, strict=True) if p is not None and y is not None
    ]
    accuracy = sum(p == y for p, y in pairs) / len(pairs) if pairs else None
    calibration = None
    if probs is not None and probs.shape[1] >= 2:
        k = probs.shape[1]
        index = {str(j): j for j in range(k)}
        y = np.array([index.get(v, -1) if v is not None else -2 for v in labels])
        # labels named otherwise than by class index cannot calibrate index-ordered lists
        ok = (y >= 0) & np.isfinite(probs).all(axis=1)
        if ok.any():
            calibration = Calibration.fit(probs[ok], y[ok])
    return BaselinePerformance(rows=len(pairs), accuracy=accuracy, calibration=calibration)
