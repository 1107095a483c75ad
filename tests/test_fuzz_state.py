"""Property-based fuzzing of the state loader and the captured-baseline loader.

Invariant for both: whatever bytes stand in the files (random, truncated, bit-flipped,
valid-looking with absurd sizes and a checksum that matches), loading either loads or
sets the file aside; it never raises and never leaves a tracker half-restored. Hangs on
FIFOs and unbounded reads (/dev/zero) are covered through the daemon in
tests/test_state_files.py; here the bytes vary.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.baseline import write_baseline
from sidecar.baseline_meta import METADATA_KEY
from sidecar.config import Config, ModelSpec, parse_config
from sidecar.events import decode_lines
from sidecar.loading import captured_baseline
from sidecar.state import StateStore
from sidecar.statefiles import state_name
from sidecar.tracker import ModelTracker

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CONFIG = {
    "auto_register": {"capture": 40},
    "models": [
        {
            "name": "m",
            "baseline": {"capture": 40},
            "features": [{"name": "x"}, {"name": "c", "type": "categorical"}],
            "prediction": {"type": "numeric"},
            "drift": {"window_size": 64, "min_samples": 10},
        }
    ],
}


@dataclass(frozen=True)
class Pristine:
    config: Config
    spec: ModelSpec
    baseline_bytes: bytes
    manifest: dict[str, Any]
    arrays: bytes


def _events(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        json.dumps(
            {
                "model": "m",
                "features": {"x": float(rng.normal()), "c": str(rng.choice(["a", "b", "c"]))},
                "prediction": float(rng.random()),
            }
        ).encode()
        for _ in range(n)
    ]


def _tracker(p: Pristine, root: Path) -> ModelTracker:
    t = ModelTracker(p.spec, p.config.drift_for(p.spec))
    (root / "baselines").mkdir(parents=True, exist_ok=True)
    path = root / "baselines" / "m.parquet"
    path.write_bytes(p.baseline_bytes)
    b = captured_baseline(p.config, p.spec, StateStore(root))
    assert b is not None
    t.install_baseline(b)
    return t


@pytest.fixture(scope="module")
def pristine() -> Iterator[Pristine]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = parse_config({**CONFIG, "state_dir": str(root)}, str(root / "sidecar.yaml"))
        spec = config.models[0]
        rng = np.random.default_rng(1)
        write_baseline(
            root / "baselines" / "m.parquet",
            "m",
            numeric={"x": rng.normal(size=40)},
            categorical={"c": list(rng.choice(["a", "b"], 40))},
            prediction=rng.random(40),
            prediction_kind="numeric",
            source="capture",
        )
        p = Pristine(config, spec, (root / "baselines" / "m.parquet").read_bytes(), {}, b"")
        t = _tracker(p, root)
        t.ingest(decode_lines(_events(50, 2), 100).events, now=1e9)
        StateStore(root).write(StateStore(root).collect({"m": t}))
        manifest = json.loads((root / "windows" / "m.json").read_text())
        arrays = (root / "windows" / manifest["arrays"]).read_bytes()
        yield Pristine(config, spec, p.baseline_bytes, manifest, arrays)


# ------------------------------------------------------------------ the state loader
def _npy(shape: Any, descr: str = "<f8", payload: bytes = b"") -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return f.getvalue() + payload


def _npz(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return buf.getvalue()


absurd_ints = st.sampled_from([10**12, 2**63, 2**64 + 1, -1, 10**400])
shapes = st.one_of(
    st.tuples(absurd_ints, st.integers(0, 3)),
    st.tuples(st.integers(0, 100), absurd_ints),
    st.lists(st.integers(0, 5), max_size=4).map(tuple),
)


@st.composite
def arrays_files(draw: st.DrawFn, pristine: Pristine) -> bytes:
    kind = draw(st.integers(0, 5))
    good = pristine.arrays
    if kind == 0:
        return draw(st.binary(max_size=2000))
    if kind == 1:
        return good[: draw(st.integers(0, len(good)))]
    if kind == 2:
        data = bytearray(good)
        for i in draw(st.lists(st.integers(0, len(good) - 1), min_size=1, max_size=20)):
            data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    name = draw(st.sampled_from(sorted(members)))
    if kind == 3:  # a member whose header claims an absurd or wrong shape
        descr = draw(st.sampled_from(["<f8", "<i4", "|O", "<U5", "<c16", "V8", "<f8"]))
        members[name] = _npy(draw(shapes), descr, draw(st.binary(max_size=64)))
    elif kind == 4:  # members that should not be there, or compressed ones
        members[draw(st.sampled_from(["../x.npy", "extra.npy", "numeric", name]))] = draw(
            st.binary(max_size=64)
        )
        return _npz(members, draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])))
    else:  # a member with a random header
        members[name] = b"\x93NUMPY\x01\x00" + draw(st.binary(max_size=200))
    return _npz(members)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def manifests(draw: st.DrawFn, pristine: Pristine) -> bytes:
    kind = draw(st.integers(0, 3))
    good = json.dumps(pristine.manifest).encode()
    if kind == 0:
        return draw(st.binary(max_size=500))
    if kind == 1:
        return good[: draw(st.integers(0, len(good)))]
    man = dict(pristine.manifest)
    if kind == 2:  # absurd row counts, values of the wrong type, JSON's non-numbers
        token = draw(
            st.one_of(
                absurd_ints.map(str),
                st.sampled_from(
                    ["NaN", "Infinity", "-Infinity", "1e400", "-0", "1.5", '"50"', "true", "null"]
                ),
            )
        )
        return json.dumps({**man, "rows": 0}).replace('"rows": 0', f'"rows": {token}').encode()
    key = draw(st.sampled_from(sorted(man)))
    man[key] = draw(json_values)
    return json.dumps(man).encode()


def _restore(p: Pristine, manifest: bytes, arrays: bytes, consistent: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = _tracker(p, root)
        windows = root / "windows"
        windows.mkdir()
        (windows / "m.json").write_bytes(manifest)
        try:
            parsed = json.loads(manifest)
        except (ValueError, RecursionError):
            parsed = None
        name = parsed.get("arrays") if isinstance(parsed, dict) else None
        if (
            not isinstance(name, str)
            or Path(name).name != name
            or "\0" in name
            or not name.endswith(".npz")
        ):
            name = p.manifest["arrays"]
        (windows / name).write_bytes(arrays)
        if consistent and isinstance(parsed, dict):  # the bytes reach the array parser
            parsed["sha256"] = hashlib.sha256(arrays).hexdigest()
            (windows / "m.json").write_text(json.dumps(parsed))
        bins_before = [b.copy() for b in t.num_bins]
        restored = StateStore(root).restore({"m": t})  # must not raise
        if restored == ["m"]:
            assert 0 <= len(t.window) <= t.window.capacity
        else:
            assert restored == []
            assert len(t.window) == 0  # nothing half-installed
            assert all((a == b).all() for a, b in zip(bins_before, t.num_bins, strict=True))


@FUZZ
@given(data=st.data())
def test_state_loader_loads_or_sets_aside_any_arrays_file(pristine, data):
    arrays = data.draw(arrays_files(pristine))
    _restore(
        pristine,
        json.dumps(pristine.manifest).encode(),
        arrays,
        consistent=data.draw(st.booleans()),
    )


@FUZZ
@given(data=st.data())
def test_state_loader_loads_or_sets_aside_any_manifest(pristine, data):
    _restore(
        pristine,
        data.draw(manifests(pristine)),
        pristine.arrays,
        consistent=data.draw(st.booleans()),
    )


def test_the_pristine_snapshot_does_restore(pristine):
    """The properties above are only meaningful if the untouched files load."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = _tracker(pristine, root)
        (root / "windows").mkdir()
        (root / "windows" / "m.json").write_text(json.dumps(pristine.manifest))
        (root / "windows" / pristine.manifest["arrays"]).write_bytes(pristine.arrays)
        assert StateStore(root).restore({"m": t}) == ["m"]
        assert len(t.window) == 50


# ------------------------------------------------------------------ captured baselines
def _with_metadata(data: bytes, change: Any) -> bytes:
    table = pq.read_table(pa.BufferReader(data))
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    change(meta)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, allow_nan=True).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@st.composite
def captured_files(draw: st.DrawFn, pristine: Pristine) -> bytes:
    good = pristine.baseline_bytes
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=3000))
    if kind == 1:
        return good[: draw(st.integers(0, len(good)))]
    if kind == 2:
        data = bytearray(good)
        for i in draw(st.lists(st.integers(0, len(good) - 1), min_size=1, max_size=20)):
            data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    # Valid parquet whose stored statistics are absurd: huge counts, NaN edges, any JSON.
    section = draw(st.sampled_from(["numeric", "categorical", "prediction", "rows"]))
    value = draw(st.one_of(json_values, absurd_ints, st.just(float("nan"))))

    def change(meta: dict[str, Any]) -> None:
        if section == "rows":
            meta["rows"] = value
        elif section == "prediction":
            meta["prediction"] = {
                "kind": "numeric",
                "edges": value,
                "shares": value,
                "count": value,
                "mean": value,
            }
        else:
            for entry in meta[section].values():
                for k in list(entry):
                    entry[k] = value

    return _with_metadata(good, change)


def _load_captured(pristine: Pristine, content: bytes) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "baselines" / f"{state_name('m')}.parquet"
        path.parent.mkdir()
        path.write_bytes(content)
        b = captured_baseline(pristine.config, pristine.spec, StateStore(root))  # no raise
        moved = list(path.parent.glob("m.parquet.corrupt-*"))
        if b is None:
            assert len(moved) == 1 and moved[0].read_bytes() == content
            assert not path.exists()
        else:
            assert not moved and b.source == "capture"
            assert [r.name for r in b.numeric] == ["x"]
            assert all(np.all(np.diff(r.edges) > 0) for r in b.numeric)
        return b


@FUZZ
@given(data=st.data())
def test_captured_baseline_loader_loads_or_sets_aside_any_file(pristine, data):
    _load_captured(pristine, data.draw(captured_files(pristine)))


def test_the_pristine_captured_baseline_does_load(pristine):
    assert _load_captured(pristine, pristine.baseline_bytes) is not None


# Every one-byte change in a parquet footer, each loaded in one child process: pyarrow
# aborts the process (it cannot raise) on some damaged column-chunk entries when asked
# for a column's metadata, so a single abort anywhere fails the child and this test.
_FOOTER_SWEEP = r"""
import io, sys, tempfile
from pathlib import Path
import numpy as np
import pyarrow as pa, pyarrow.parquet as pq
from sidecar.baseline import load_baseline
from sidecar.errors import BaselineError
from sidecar.statefiles import load_captured_baseline

rng = np.random.default_rng(3)
table = pa.table({"x": rng.normal(size=200), "c": pa.array(["a", "b"] * 100)})
buf = io.BytesIO(); pq.write_table(table, buf); base = buf.getvalue()
footer = int.from_bytes(base[-8:-4], "little")
start = len(base) - 8 - footer

def user(data):
    try:
        load_baseline("mem", "m", numeric_names=["x"], categorical_names=["c"],
                      prediction_kind=None, data=data)
        return "loaded"
    except BaselineError:
        return "refused"

seen = {"loaded": 0, "refused": 0, "captured": 0, "aside": 0}
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "m.parquet"
    for pos in range(start, len(base) - 8):
        for value in (0x00, 0x01, 0x02, 0x15, 0x7F, 0xFF):
            data = bytearray(base); data[pos] = value; data = bytes(data)
            seen[user(data)] += 1
            path.write_bytes(data)
            got = load_captured_baseline(path, "m", user, max_rows=1000, columns=2)
            seen["captured" if got is not None else "aside"] += 1
            for p in Path(tmp).iterdir():
                p.unlink()
print(seen)
"""


def test_no_one_byte_footer_change_aborts_the_loaders():
    done = subprocess.run(
        [sys.executable, "-c", _FOOTER_SWEEP],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert seen["refused"] > 0 and seen["aside"] > 0  # the sweep did reach damaged files
    assert seen["loaded"] + seen["refused"] == seen["captured"] + seen["aside"]
