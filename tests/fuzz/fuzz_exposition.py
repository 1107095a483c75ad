"""Coverage-guided fuzzing of the path from bytes on the socket to `/metrics`, with atheris.

Run for a fixed time (libFuzzer flags pass through):

    python tests/fuzz/fuzz_exposition.py -max_total_time=60

Each input is a stream of NDJSON lines, decoded and folded into a pipeline with configured and
auto-registered models whose baselines are captured after a few events (as the daemon does),
then scraped in both formats. A crash is any exception escaping, or an exposition that
prometheus_client's text or OpenMetrics parser refuses, or a non-finite exemplar timestamp.
"""

from __future__ import annotations

import math
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
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics import exposition as om_exposition
    from prometheus_client.openmetrics import parser as om_parser
    from prometheus_client.parser import text_string_to_metric_families

    from sidecar.baseline import write_baseline
    from sidecar.capture import CaptureData
    from sidecar.config import parse_config
    from sidecar.events import decode_lines
    from sidecar.metrics import Health, SidecarCollector
    from sidecar.pipeline import Pipeline
    from sidecar.tracker import ModelTracker

CONFIG = parse_config(
    {
        "models": [
            {
                "name": "m",
                "baseline": {"capture": 3},
                "features": [
                    {"name": "a"},
                    {"name": "b", "buckets": [-1, 0, 1]},
                    {"name": "c", "type": "categorical"},
                ],
                "prediction": {"type": "numeric"},
                "max_classes": 3,
            },
            {
                "name": "k",
                "baseline": {"capture": 3},
                "features": [{"name": "a"}, {"name": "c", "type": "categorical"}],
                "prediction": {"type": "categorical"},
                "max_classes": 3,
            },
        ],
        "auto_register": {"enabled": True, "max_models": 2, "capture": 3, "max_features": 3},
        "drift": {"max_categories": 3, "psi_bins": 3},
        "limits": {"max_label_bytes": 32},
    }
)
STATE = Path(tempfile.mkdtemp(prefix="fuzz-exposition-"))


def test_one_input(data: bytes) -> None:
    health = Health()
    captures: list[tuple[ModelTracker, CaptureData]] = []
    pipeline = Pipeline(CONFIG, health, on_capture=lambda t, d: captures.append((t, d)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SidecarCollector(lambda: list(pipeline.trackers.values()), health))
    pipeline.handle(decode_lines(data.split(b"\n"), 16), "socket", now=1.7e9)
    for i, (t, d) in enumerate(captures):
        baseline = write_baseline(
            STATE / f"{i}.parquet",
            t.name,
            numeric=d.numeric,
            categorical=d.categorical,
            prediction=d.prediction,
            prediction_kind=t.pred_kind,
            psi_bins=t.drift.psi_bins,
            max_categories=t.drift.max_categories,
        )
        t.install_baseline(baseline, backfill=True)
    list(text_string_to_metric_families(generate_latest(registry).decode("utf-8")))
    om = om_exposition.generate_latest(registry).decode("utf-8")
    for family in om_parser.text_string_to_metric_families(om):
        for s in family.samples:
            if s.exemplar is not None and not math.isfinite(s.exemplar.timestamp or math.nan):
                raise AssertionError(f"exemplar timestamp {s.exemplar.timestamp}")


def main() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
