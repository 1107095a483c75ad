"""The label store on disk, and what a labeled baseline says about its model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sidecar.config import LabelSettings
from sidecar.errors import BaselineError
from sidecar.label_store import KIND_CLASS, KIND_DEAD, KIND_VALUE, id_hashes
from sidecar.labels import LabelBook
from sidecar.labels_io import (
    PENDING_FILE,
    baseline_performance,
    collect_pending,
    restore_pending,
    write_pending,
)


def book_with_rows() -> LabelBook:
    book = LabelBook(LabelSettings())
    m = book.model_code("m")
    assert m == 0
    c = book.class_code("cat")
    keys = id_hashes("m", ["a", "b", "c"])
    book.store.add(
        keys,
        m,
        np.array([1.0, 2.0, 3.0]),
        np.array([float(c), 2.5, float(c)]),
        np.array([KIND_CLASS, KIND_VALUE, KIND_CLASS], np.uint8),
    )
    book.store.take(id_hashes("m", ["c"]))
    return book


def test_pending_predictions_round_trip(tmp_path: Path) -> None:
    write_pending(tmp_path, collect_pending(book_with_rows()))
    again = LabelBook(LabelSettings())
    assert restore_pending(tmp_path, again) == 2
    assert again.model_names == ["m"] and again.class_names == ["cat"]
    got = again.store.take(id_hashes("m", ["a", "b", "c"]))
    assert got.kind.tolist() == [KIND_CLASS, KIND_VALUE, KIND_DEAD]
    assert got.value[:2].tolist() == [0.0, 2.5] and got.ts[:2].tolist() == [1.0, 2.0]


def test_no_file_is_an_empty_store(tmp_path: Path) -> None:
    assert restore_pending(tmp_path, LabelBook(LabelSettings())) == 0


def _arrays(book: LabelBook) -> dict[str, np.ndarray]:
    return collect_pending(book).arrays


@pytest.mark.parametrize(
    "damage",
    [
        "not a zip",
        "kind 7",
        "model 3",
        "class 9",
        "short column",
        "names",
    ],
)
def test_a_damaged_file_is_set_aside_and_the_store_starts_empty(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / PENDING_FILE
    path.parent.mkdir()
    arrays = _arrays(book_with_rows())
    if damage == "not a zip":
        path.write_bytes(b"garbage")
    else:
        if damage == "kind 7":
            arrays["kinds"][0] = 7
        elif damage == "model 3":
            arrays["models"][0] = 3
        elif damage == "class 9":
            arrays["values"][0] = 9.0
        elif damage == "short column":
            arrays["times"] = arrays["times"][:1]
        else:
            arrays["names"] = np.frombuffer(b'{"format": 1}', dtype=np.uint8).copy()
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        path.write_bytes(buf.getvalue())
    book = LabelBook(LabelSettings())
    assert restore_pending(tmp_path, book) == 0
    assert len(book.store) == 0
    assert not path.exists()
    assert [p.name.split(".corrupt-")[0] for p in path.parent.iterdir()] == ["pending.npz"]


def test_baseline_accuracy_and_calibration(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 3000
    p = rng.random(n)
    y = (rng.random(n) < p).astype(int)
    path = tmp_path / "b.parquet"
    pq.write_table(
        pa.table({"label": y, "probabilities": np.stack([1 - p, p], axis=1).tolist()}), path
    )
    perf = baseline_performance(path)
    assert perf is not None and perf.calibration is not None
    assert perf.rows == n
    assert perf.accuracy == pytest.approx(float(((p > 0.5).astype(int) == y).mean()))
    # with a prediction column, accuracy is the prediction's
    pq.write_table(
        pa.table({"label": ["a", "b", "a", None], "prediction": ["a", "a", "a", "b"]}), path
    )
    perf = baseline_performance(path)
    assert perf is not None and perf.calibration is None
    assert (perf.rows, perf.accuracy) == (3, pytest.approx(2 / 3))
    pq.write_table(pa.table({"x": [1.0]}), path)
    assert baseline_performance(path) is None
    pq.write_table(pa.table({"label": [1, 0], "probabilities": [[0.5, 0.5], [1.0]]}), path)
    with pytest.raises(BaselineError, match="probabilities"):
        baseline_performance(path)
