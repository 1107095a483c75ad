"""Coverage-guided fuzzing of the state loader and the captured-baseline loader with atheris.

Run for a fixed time (libFuzzer flags pass through); seeding a corpus with the real files
first lets it start from valid JSON, zip and parquet:

    python tests/fuzz/fuzz_state.py --write-seeds corpus-state/
    python tests/fuzz/fuzz_state.py -max_total_time=60 corpus-state/

Each input's first byte picks what it replaces in a real, freshly written state folder:
the window manifest, the window arrays (with the manifest's checksum fixed to match, so the
bytes reach the array parser), or the captured baseline; the rest of the input is the
file's content. A crash is any exception escaping a loader, a tracker changed by a snapshot
that was not restored, or a file that was neither used nor set aside.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import atheris
except ImportError:
    sys.exit(
        "atheris is not installed: `pip install atheris` (Linux, CPython 3.8-3.11), "
        "then run this file again"
    )

with atheris.instrument_imports():
    import numpy as np

    from sidecar.baseline import write_baseline
    from sidecar.config import Config, ModelSpec, parse_config
    from sidecar.events import decode_lines
    from sidecar.loading import captured_baseline
    from sidecar.state import StateStore
    from sidecar.tracker import ModelTracker

CONFIG = {
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
ROOT = Path(tempfile.mkdtemp(prefix="fuzz-state-"))
PRISTINE: dict[str, bytes] = {}
MANIFEST: dict[str, object] = {}


def config() -> tuple[Config, ModelSpec]:
    cfg = parse_config({**CONFIG, "state_dir": str(ROOT)}, str(ROOT / "sidecar.yaml"))
    return cfg, cfg.models[0]


def tracker(cfg: Config, spec: ModelSpec) -> ModelTracker:
    t = ModelTracker(spec, cfg.drift_for(spec))
    b = captured_baseline(cfg, spec, StateStore(ROOT))
    if b is None:
        raise AssertionError("the pristine captured baseline did not load")
    t.install_baseline(b)
    return t


def setup() -> None:
    cfg, spec = config()
    rng = np.random.default_rng(1)
    write_baseline(
        ROOT / "baselines" / "m.parquet",
        "m",
        numeric={"x": rng.normal(size=40)},
        categorical={"c": list(rng.choice(["a", "b"], 40))},
        prediction=rng.random(40),
        prediction_kind="numeric",
        source="capture",
    )
    t = tracker(cfg, spec)
    lines = [
        json.dumps(
            {"model": "m", "features": {"x": float(i), "c": "abc"[i % 3]}, "prediction": i / 50}
        ).encode()
        for i in range(50)
    ]
    t.ingest(decode_lines(lines, 100).events, now=1e9)
    StateStore(ROOT).write(StateStore(ROOT).collect({"m": t}))
    MANIFEST.update(json.loads((ROOT / "windows" / "m.json").read_text()))
    PRISTINE["manifest"] = (ROOT / "windows" / "m.json").read_bytes()
    PRISTINE["arrays"] = (ROOT / "windows" / str(MANIFEST["arrays"])).read_bytes()
    PRISTINE["baseline"] = (ROOT / "baselines" / "m.parquet").read_bytes()


def reset() -> None:
    for sub in ("windows", "baselines"):
        shutil.rmtree(ROOT / sub, ignore_errors=True)
        (ROOT / sub).mkdir()
    (ROOT / "windows" / "m.json").write_bytes(PRISTINE["manifest"])
    (ROOT / "windows" / str(MANIFEST["arrays"])).write_bytes(PRISTINE["arrays"])
    (ROOT / "baselines" / "m.parquet").write_bytes(PRISTINE["baseline"])


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target, content = data[0] % 3, data[1:]
    reset()
    cfg, spec = config()
    if target == 2:
        path = ROOT / "baselines" / "m.parquet"
        path.write_bytes(content)
        b = captured_baseline(cfg, spec, StateStore(ROOT))
        moved = list(path.parent.glob("m.parquet.corrupt-*"))
        if (b is None) != (len(moved) == 1):
            raise AssertionError("a captured baseline neither loaded nor set aside")
        return
    t = tracker(cfg, spec)
    if target == 0:
        (ROOT / "windows" / "m.json").write_bytes(content)
    else:
        (ROOT / "windows" / str(MANIFEST["arrays"])).write_bytes(content)
        man = {**MANIFEST, "sha256": hashlib.sha256(content).hexdigest()}
        (ROOT / "windows" / "m.json").write_text(json.dumps(man))
    restored = StateStore(ROOT).restore({"m": t})
    if restored != ["m"] and (len(t.window) or any(b.any() for b in t.num_bins)):
        raise AssertionError("a discarded snapshot changed the tracker")


def main() -> None:
    import structlog

    # Every discarded file logs a warning; keep the fuzzer's output to its own lines.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    setup()
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        out = Path(sys.argv[2])
        out.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(("manifest", "arrays", "baseline")):
            (out / f"seed-{name}").write_bytes(bytes([i]) + PRISTINE[name])
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
