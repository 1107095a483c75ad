"""The embedding window in `state_dir`: it survives a restart like the event window.

- A model with embedding drift writes its embedding rows (float32, as the window holds
  them) beside the event window, at manifest format 3; the restored window is the saved
  one, row for row, in order, with its receive times.
- A format-2 snapshot (written before embeddings were kept, or while the model had no
  embedding drift) still restores the event window; the embedding window starts empty.
- A saved embedding window whose dimension is no longer the configured one, or of a
  model that no longer has embedding drift, is dropped alone, with a log line; the event
  window is restored.
- A format-3 snapshot that does not match its own manifest is set aside, like any other
  damaged snapshot, and the model starts empty.
- Through the real daemon: SIGTERM, restart, and the window and the next check's
  embedding result are as before; `embedding.dim` changed on reload (refused while the
  baseline does not have it, applied with a new baseline, then restored after a restart).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from harness import DaemonProcess, start_daemon, wait_for
from structlog.testing import capture_logs

from sidecar.baseline import load_baseline, write_baseline
from sidecar.config import parse_config
from sidecar.embedding import EmbeddingOptions
from sidecar.events import decode_lines
from sidecar.state import EMBEDDING_FORMAT_VERSION, FORMAT_VERSION, StateStore
from sidecar.stats.reference import Baseline
from sidecar.tracker import ModelTracker

DIM = 8


def _baseline_file(path: Path, dim: int, seed: int = 0, rows: int = 400) -> Path:
    rng = np.random.default_rng(seed)
    write_baseline(
        path,
        "m",
        numeric={"x": rng.standard_normal(rows)},
        categorical={},
        prediction=None,
        prediction_kind=None,
        embedding=rng.standard_normal((rows, dim)).astype(np.float32),
    )
    return path


def _model(base: Path, dim: int | None, window: int = 64) -> dict[str, Any]:
    m: dict[str, Any] = {
        "name": "m",
        "baseline": {"path": str(base)},
        "features": [{"name": "x"}],
        "drift": {"window_size": window, "min_samples": 10},
    }
    if dim is not None:
        m["embedding"] = {"dim": dim, "device": "numpy", "features": 64}
    return m


def _tracker(base: Path, dim: int | None, baseline: Baseline | None = None) -> ModelTracker:
    cfg = parse_config({"models": [_model(base, dim)]}, str(base.parent / "sidecar.yaml"))
    spec = cfg.models[0]
    t = ModelTracker(spec, cfg.drift_for(spec))
    if baseline is None:
        baseline = load_baseline(
            base,
            "m",
            numeric_names=["x"],
            categorical_names=[],
            prediction_kind=None,
            embedding=EmbeddingOptions(dim=dim, device="numpy", n_features=64) if dim else None,
        )
    t.install_baseline(baseline)
    return t


def _events(n: int, dim: int, seed: int, every: int = 1) -> list[bytes]:
    """n events; every `every`-th carries an embedding of `dim` values."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ev: dict[str, Any] = {"model": "m", "features": {"x": float(rng.standard_normal())}}
        if i % every == 0:
            ev["embedding"] = rng.standard_normal(dim).astype(np.float32).tolist()
        out.append(json.dumps(ev).encode())
    return out


def _ingest(t: ModelTracker, lines: list[bytes], now: float) -> None:
    assert t.ingest(decode_lines(lines, 1 << 20).events, now=now) == []


def _manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "windows" / "m.json").read_text())


def test_the_embedding_window_round_trips_row_for_row(tmp_path):
    base = _baseline_file(tmp_path / "b.parquet", DIM)
    t = _tracker(base, DIM)
    # 100 events into a window of 64, a third without an embedding: the ring has wrapped
    _ingest(t, _events(60, DIM, 1, every=3), now=1000.0)
    _ingest(t, _events(140, DIM, 2), now=1001.0)
    assert t.embedding_window is not None and len(t.embedding_window) == 64
    store = StateStore(tmp_path / "state")
    assert store.save({"m": t}) == 1
    man = _manifest(store.root)
    assert man["format"] == EMBEDDING_FORMAT_VERSION
    assert (man["embedding_dim"], man["embedding_rows"]) == (DIM, 64)
    # compact: the float32 rows and their times, plus the event window and headers
    npz = store.root / "windows" / man["arrays"]
    assert npz.stat().st_size < 64 * (4 * DIM + 8) + 64 * 40 + 16 * 1024

    t2 = _tracker(base, DIM)
    with capture_logs() as logs:
        assert store.restore({"m": t2}) == ["m"]
    assert t2.embedding_window is not None
    np.testing.assert_array_equal(t2.embedding_window.snapshot(), t.embedding_window.snapshot())
    np.testing.assert_array_equal(t2.embedding_window.received(), t.embedding_window.received())
    assert t2.embedding_window.snapshot().dtype == np.float32
    np.testing.assert_array_equal(t2.window.snapshot().numeric, t.window.snapshot().numeric)
    (restored,) = [r for r in logs if r["event"] == "state_restored"]
    assert restored["rows"] == 64 and restored["embedding_rows"] == 64

    # and appends after the restore continue the same ring
    _ingest(t, _events(5, DIM, 3), now=1002.0)
    _ingest(t2, _events(5, DIM, 3), now=1002.0)
    np.testing.assert_array_equal(t2.embedding_window.snapshot(), t.embedding_window.snapshot())


def test_a_model_without_embedding_drift_still_writes_format_2(tmp_path):
    base = _baseline_file(tmp_path / "b.parquet", DIM)
    t = _tracker(base, None)
    _ingest(t, _events(20, DIM, 1), now=1000.0)
    store = StateStore(tmp_path / "state")
    store.save({"m": t})
    man = _manifest(store.root)
    assert man["format"] == FORMAT_VERSION and "embedding_dim" not in man


def test_a_snapshot_without_embeddings_restores_the_event_window(tmp_path):
    """Written before embeddings were kept (or before the model had embedding drift): the
    baseline file is the same, so the snapshot is still this model's."""
    base = _baseline_file(tmp_path / "b.parquet", DIM)
    old = _tracker(base, None)
    _ingest(old, _events(30, DIM, 1), now=1000.0)
    store = StateStore(tmp_path / "state")
    store.save({"m": old})

    t = _tracker(base, DIM)
    with capture_logs() as logs:
        assert store.restore({"m": t}) == ["m"]
    assert len(t.window) == 30
    assert t.embedding_window is not None and len(t.embedding_window) == 0
    assert not [r for r in logs if r["event"] in ("state_discarded", "state_embedding_discarded")]
    _ingest(t, _events(4, DIM, 2), now=1001.0)  # and it fills from there
    assert len(t.embedding_window) == 4


@pytest.mark.parametrize(
    ("now_dim", "reason"),
    [
        (16, "embedding dim 8 in the snapshot, 16 configured"),
        (None, "the model no longer has embedding drift configured"),
    ],
)
def test_an_embedding_window_that_no_longer_fits_is_dropped_alone(tmp_path, now_dim, reason):
    base = _baseline_file(tmp_path / "b.parquet", DIM)
    t = _tracker(base, DIM)
    _ingest(t, _events(30, DIM, 1), now=1000.0)
    store = StateStore(tmp_path / "state")
    store.save({"m": t})
    assert t.baseline is not None
    # The same baseline file (same sha256) under a config whose embedding changed.
    t2 = _tracker(base, now_dim, dataclasses.replace(t.baseline, embedding=None))
    with capture_logs() as logs:
        assert store.restore({"m": t2}) == ["m"]
    (dropped,) = [r for r in logs if r["event"] == "state_embedding_discarded"]
    assert dropped["reason"] == reason and dropped["rows"] == 30
    assert dropped["log_level"] == "warning"
    assert not [r for r in logs if r["event"] == "state_discarded"]
    assert len(t2.window) == 30  # the event window is kept
    if now_dim is not None:
        assert t2.embedding_window is not None and len(t2.embedding_window) == 0
        assert t2.embedding_window.dim == now_dim
    # the snapshot file itself was fine: nothing set aside
    assert not list((store.root / "windows").glob("*corrupt*"))


def _rewrite(store: StateStore, change_manifest: Any = None, change_arrays: Any = None) -> None:
    """Change a snapshot and make its checksum match again: a file that passes the
    checksum but is not what this sidecar writes."""
    man = _manifest(store.root)
    npz = store.root / "windows" / man["arrays"]
    if change_arrays is not None:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        change_arrays(arrays)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        npz.write_bytes(buf.getvalue())
        man["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    if change_manifest is not None:
        change_manifest(man)
    (store.root / "windows" / "m.json").write_text(json.dumps(man))


@pytest.mark.parametrize(
    ("change_manifest", "change_arrays", "says"),
    [
        (lambda m: m.update(embedding_dim=0), None, "embedding_dim 0 out of range"),
        (lambda m: m.update(embedding_dim="8"), None, "embedding_dim '8' out of range"),
        (lambda m: m.update(embedding_rows=10**9), None, "embedding_rows 1000000000 out of"),
        (lambda m: m.update(embedding_rows=29), None, "expected (29, 8) float32"),
        (
            None,
            lambda a: a.update(embedding=a["embedding"].astype(np.float64)),
            "expected (30, 8) float32",
        ),
        (
            None,
            lambda a: a["embedding"].__setitem__((3, 2), np.inf),
            "a value that is not finite",
        ),
        (None, lambda a: a.pop("embedding_received"), "KeyError('embedding_received')"),
        (lambda m: m.update(format=4), None, "format 4, expected one of (2, 3)"),
        (lambda m: m.update(format=True), None, "format True, expected one of (2, 3)"),
    ],
)
def test_a_damaged_embedding_snapshot_discards_the_whole_model(
    tmp_path, change_manifest, change_arrays, says
):
    base = _baseline_file(tmp_path / "b.parquet", DIM)
    t = _tracker(base, DIM)
    _ingest(t, _events(30, DIM, 1), now=1000.0)
    store = StateStore(tmp_path / "state")
    store.save({"m": t})
    _rewrite(store, change_manifest, change_arrays)
    t2 = _tracker(base, DIM)
    with capture_logs() as logs:
        assert store.restore({"m": t2}) == []
    (discarded,) = [r for r in logs if r["event"] == "state_discarded"]
    assert says in discarded["reason"]
    # nothing half-restored
    assert len(t2.window) == 0
    assert t2.embedding_window is not None and len(t2.embedding_window) == 0


# ------------------------------------------------------------------ through the daemon


def _daemon_config(tmp: Path, base: Path, dim: int) -> dict[str, Any]:
    model = _model(base, dim, window=600)
    model["drift"].update(interval_s=0.2, min_samples=200)
    return {"models": [model], "state": {"snapshot_interval_s": 3600}}


def _send(d: DaemonProcess, n: int, dim: int, seed: int, shift: float = 0.0) -> None:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n, dim)).astype(np.float32) + np.float32(shift)
    events = [
        {"model": "m", "features": {"x": float(rng.standard_normal())}, "embedding": row}
        for row in e.tolist()
    ]
    d.send([events[i : i + 100] for i in range(0, n, 100)])


def _records(d: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in d.logs().splitlines() if f'"{event}"' in ln]


def _embedding_result(d: DaemonProcess, samples: int) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        r = d.json("/v1/drift")["models"].get("m") or {}
        emb = r.get("embedding")
        done = emb and emb.get("samples") == samples and emb.get("statistic") is not None
        return emb if done else None

    return wait_for(ready, 20, f"an embedding check over {samples} rows")


def _restart(tmp: Path, d: DaemonProcess, sub: str) -> DaemonProcess:
    folder = tmp / sub
    folder.mkdir()
    return start_daemon(folder, config_path=d.config_path, wait_ready=True)


def test_the_daemon_restores_the_embedding_window_after_sigterm(tmp_path, daemon_factory):
    base = _baseline_file(tmp_path / "b.parquet", 16, rows=1000)
    d = daemon_factory(_daemon_config(tmp_path, base, 16), wait_ready=True)
    started = [d]
    try:
        _send(d, 450, 16, seed=1, shift=0.3)
        d.wait_metric("drift_sidecar_events_accepted_total", 450, model_name="m")
        before = _embedding_result(d, 450)
        assert before["drifted"] is True
        m0 = d.scrape()
        assert m0.value("ml_embedding_window_samples", model_name="m") == 450
        assert d.stop(signal.SIGTERM) == 0

        d2 = _restart(tmp_path, d, "second")
        started.append(d2)
        (restored,) = _records(d2, "state_restored")
        assert restored["rows"] == 450 and restored["embedding_rows"] == 450
        assert d2.scrape().value("ml_embedding_window_samples", model_name="m") == 450
        after = _embedding_result(d2, 450)
        # the same rows against the same reference: the same test, to the last digit
        for key in ("statistic", "pvalue", "centroid_distance", "drifted", "device", "test"):
            assert after[key] == before[key], key
        assert d2.stop(signal.SIGTERM) == 0

        # The same baseline, the embedding switched off: the event window comes back, the
        # embedding rows are dropped with a line that says why.
        cfg = yaml.safe_load(d.config_path.read_text())
        del cfg["models"][0]["embedding"]
        d.config_path.write_text(yaml.safe_dump(cfg))
        d3 = _restart(tmp_path, d, "third")
        started.append(d3)
        (dropped,) = _records(d3, "state_embedding_discarded")
        assert dropped["reason"] == "the model no longer has embedding drift configured"
        assert d3.scrape().value("ml_drift_window_samples", model_name="m") == 450
        assert d3.json("/v1/drift")["models"]["m"].get("embedding") is None
    finally:
        for p in started:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)


def test_embedding_dim_changed_on_reload(tmp_path, daemon_factory):
    base8 = _baseline_file(tmp_path / "b8.parquet", 8, rows=1000)
    base12 = _baseline_file(tmp_path / "b12.parquet", 12, seed=5, rows=1000)
    d = daemon_factory(_daemon_config(tmp_path, base8, 8), wait_ready=True)
    started = [d]
    try:
        _send(d, 300, 8, seed=1)
        d.wait_metric("drift_sidecar_events_accepted_total", 300, model_name="m")
        _embedding_result(d, 300)

        def reload_to(dim: int, base: Path, result: str, n: int) -> None:
            cfg = yaml.safe_load(d.config_path.read_text())
            cfg["models"][0]["embedding"]["dim"] = dim
            cfg["models"][0]["baseline"]["path"] = str(base)
            d.config_path.write_text(yaml.safe_dump(cfg))
            d.proc.send_signal(signal.SIGHUP)
            d.wait_metric("drift_sidecar_config_reloads_total", n, result=result)

        # The baseline's embeddings are 8 long: a dimension of 12 is refused, and the
        # running config keeps its window.
        reload_to(12, base8, "failure", 1)
        (refused,) = _records(d, "reload_refused")
        assert "expected 12" in refused["error"]
        assert d.scrape().value("ml_embedding_window_samples", model_name="m") == 300
        _send(d, 10, 8, seed=2)
        d.wait_metric("drift_sidecar_events_accepted_total", 310, model_name="m")

        # With a baseline of that dimension it applies: the model starts over at 12.
        reload_to(12, base12, "success", 1)
        assert _records(d, "reloaded")[-1]["rebuilt"] == ["m"]
        assert d.scrape().value("ml_embedding_window_samples", model_name="m") == 0
        _send(d, 5, 8, seed=3)  # the old length is now the wrong one
        d.wait_metric("drift_sidecar_events_rejected_total", 5, reason="embedding_dim")
        _send(d, 250, 12, seed=4)
        d.wait_metric("ml_embedding_window_samples", 250, model_name="m")
        before = _embedding_result(d, 250)
        assert d.stop(signal.SIGTERM) == 0

        d2 = _restart(tmp_path, d, "second")
        started.append(d2)
        (restored,) = _records(d2, "state_restored")
        assert restored["embedding_rows"] == 250
        assert not _records(d2, "state_embedding_discarded")
        after = _embedding_result(d2, 250)
        assert (after["statistic"], after["pvalue"]) == (before["statistic"], before["pvalue"])
    finally:
        for p in started:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)


def test_a_max_age_reload_reaches_the_embedding_window_too(tmp_path):
    """A retune keeps the tracker (and both windows); max_age_s must apply to both."""
    from sidecar.reloading import rebuild_trackers

    base = _baseline_file(tmp_path / "b.parquet", DIM)
    t = _tracker(base, DIM)
    _ingest(t, _events(10, DIM, 1), now=1000.0)
    model = _model(base, DIM)
    model["drift"]["max_age_s"] = 30
    new = parse_config({"models": [model]}, str(tmp_path / "sidecar.yaml"))
    trackers, rebuilt, retuned = rebuild_trackers({"m": t}, new, {}, lambda *_: None)
    assert trackers["m"] is t and retuned == ["m"] and rebuilt == []
    assert t.embedding_window is not None and t.embedding_window.max_age_s == 30
    t.window_snapshot(now=1031.0)  # every row is older than 30 s by then
    assert len(t.window) == 0 and len(t.embedding_window) == 0


# ------------------------------------------------------------------ fuzzing the loader
# The state loader's fuzzing (tests/test_fuzz_state.py) on a format-3 snapshot: whatever
# stands in the manifest or the arrays file, the loader restores, drops the embeddings
# alone, or discards the model; it never raises and never half-installs either window.

FUZZ_CONFIG = {
    "models": [
        {
            "name": "m",
            "baseline": {"capture": 40},
            "features": [{"name": "x"}],
            "embedding": {"dim": 4, "device": "numpy", "features": 32},
            "drift": {"window_size": 64, "min_samples": 10},
        }
    ],
}


@pytest.fixture(scope="module")
def pristine_emb() -> Any:
    import tempfile

    from test_fuzz_state import Pristine

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = parse_config({**FUZZ_CONFIG, "state_dir": str(root)}, str(root / "s.yaml"))
        spec = config.models[0]
        rng = np.random.default_rng(1)
        write_baseline(
            root / "baselines" / "m.parquet",
            "m",
            numeric={"x": rng.normal(size=40)},
            categorical={},
            prediction=None,
            prediction_kind=None,
            source="capture",
            embedding=rng.standard_normal((40, 4)).astype(np.float32),
        )
        p = Pristine(config, spec, (root / "baselines" / "m.parquet").read_bytes(), {}, b"")
        t = _fuzz_tracker(p, root)
        _ingest(t, _events(50, 4, 2, every=2), now=1e9)
        StateStore(root).save({"m": t})
        manifest = _manifest(root)
        assert manifest["format"] == EMBEDDING_FORMAT_VERSION
        arrays = (root / "windows" / manifest["arrays"]).read_bytes()
        yield Pristine(config, spec, p.baseline_bytes, manifest, arrays)


def _fuzz_tracker(p: Any, root: Path) -> ModelTracker:
    from sidecar.loading import captured_baseline

    t = ModelTracker(p.spec, p.config.drift_for(p.spec))
    (root / "baselines").mkdir(parents=True, exist_ok=True)
    (root / "baselines" / "m.parquet").write_bytes(p.baseline_bytes)
    b = captured_baseline(p.config, p.spec, StateStore(root))
    assert b is not None and b.embedding is not None
    t.install_baseline(b)
    return t


def _fuzz_restore(p: Any, manifest: bytes, arrays: bytes, consistent: bool) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = _fuzz_tracker(p, root)
        windows = root / "windows"
        windows.mkdir()
        try:
            parsed = json.loads(manifest)
        except (ValueError, RecursionError):
            parsed = None
        if consistent and isinstance(parsed, dict):  # the bytes reach the array parser
            parsed["sha256"] = hashlib.sha256(arrays).hexdigest()
            manifest = json.dumps(parsed).encode()
        (windows / "m.json").write_bytes(manifest)
        (windows / p.manifest["arrays"]).write_bytes(arrays)
        restored = StateStore(root).restore({"m": t})  # must not raise
        ew = t.embedding_window
        assert ew is not None
        if restored == ["m"]:
            assert 0 <= len(t.window) <= t.window.capacity
            assert 0 <= len(ew) <= ew.capacity
            assert np.isfinite(ew.snapshot()).all()
        else:
            assert restored == []
            assert len(t.window) == 0 and len(ew) == 0  # nothing half-installed


def _emb_manifests(p: Any) -> Any:
    from hypothesis import strategies as st
    from test_fuzz_state import json_values

    keys = st.sampled_from(["embedding_dim", "embedding_rows", "format", "rows"])
    odd = st.one_of(
        json_values,
        st.integers(-5, 10**6),
        st.sampled_from([0, 1, 3, 4, 5, 25, 26, 64, 65, 256, 65_536, 65_537]),
    )
    return st.dictionaries(keys, odd, min_size=1, max_size=3).map(
        lambda change: json.dumps({**p.manifest, **change}).encode()
    )


def _emb_arrays(p: Any) -> Any:
    """The arrays file with its embedding members replaced by other shapes, dtypes and
    values (the generic damage is fuzzed in test_fuzz_state.py)."""
    import zipfile

    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    with zipfile.ZipFile(io.BytesIO(p.arrays)) as z:
        members = {i.filename.removesuffix(".npy"): z.read(i) for i in z.infolist()}

    def build(new: dict[str, np.ndarray]) -> bytes:
        arrays = {k: np.load(io.BytesIO(v), allow_pickle=False) for k, v in members.items()}
        arrays.update(new)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    n, dim = p.manifest["embedding_rows"], p.manifest["embedding_dim"]
    arrays = hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int32, np.float16, np.uint8]),
        st.one_of(
            hnp.array_shapes(min_dims=0, max_dims=3, max_side=30),
            st.sampled_from([(n, dim), (n,), (n - 1, dim), (n, dim + 1), (0, dim)]),
        ),
    )
    return st.dictionaries(
        st.sampled_from(["embedding", "embedding_received"]), arrays, min_size=1
    ).map(build)


def _fuzz(p: Any, data: Any, manifest: bool) -> None:
    from hypothesis import strategies as st

    if manifest:
        _fuzz_restore(p, data.draw(_emb_manifests(p)), p.arrays, data.draw(st.booleans()))
    else:
        man = json.dumps(p.manifest).encode()
        _fuzz_restore(p, man, data.draw(_emb_arrays(p)), consistent=True)


def test_the_pristine_embedding_snapshot_does_restore(pristine_emb):
    _fuzz_restore(
        pristine_emb, json.dumps(pristine_emb.manifest).encode(), pristine_emb.arrays, True
    )


def _fuzz_test(manifest: bool) -> Any:
    from hypothesis import given
    from hypothesis import strategies as st
    from test_fuzz_state import FUZZ

    @FUZZ
    @given(data=st.data())
    def run(pristine_emb: Any, data: Any) -> None:
        _fuzz(pristine_emb, data, manifest)

    return run


test_the_loader_survives_any_embedding_manifest = _fuzz_test(manifest=True)
test_the_loader_survives_any_embedding_arrays = _fuzz_test(manifest=False)
