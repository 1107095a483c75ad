"""Stage latencies: an event's `stages: {name: seconds}` as
`ml_prediction_stage_latency_seconds{model_name, stage}`.

Stage names become label values, so they are bounded like every other one: a model's
configured `stages:` list keeps exactly those names, and without one the first
`limits.max_stages` names seen are kept; every other name (and one longer than
`limits.max_label_bytes`, or empty) is counted under `__other__`. The seconds themselves
are checked by the decoder (sidecar.events): a negative, non-finite or non-numeric one
rejects its event.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any

import numpy as np
from prometheus_client.core import HistogramMetricFamily

from sidecar.stats.bins import OTHER
from sidecar.vocab import Vocab

METRIC = "ml_prediction_stage_latency_seconds"
DEFAULT_MAX_STAGES = 16
"""Stage names kept per model when its config lists none (`limits.max_stages`)."""

_stages_of = attrgetter("stages")


class StageLatency:
    """One model's stage histograms: counts per (stage code, bucket), and sums."""

    def __init__(
        self,
        names: Sequence[str] | None,
        max_stages: int,
        buckets: np.ndarray,
        max_bytes: int = 128,
    ) -> None:
        self.buckets = buckets
        self._build(names, max_stages, max_bytes)

    def _build(self, names: Sequence[str] | None, max_stages: int, max_bytes: int) -> None:
        self.names: tuple[str, ...] | None = None if names is None else tuple(names)
        self.max_stages = max_stages
        cap = max_stages if names is None else len(names)
        self.vocab = Vocab(cap, names or (), max_bytes=max_bytes)
        self.counts = np.zeros((cap + 1, self.buckets.shape[0] + 1), dtype=np.int64)
        self.sums = np.zeros(cap + 1)

    def count(self, events: Sequence[Any]) -> None:
        """Fold the stages of a batch of decoded events (sidecar.events.Event)."""
        # C-level scan: a batch without stages costs one attribute read per event
        if not any(map(_stages_of, events)):
            return
        dicts = list(filter(None, map(_stages_of, events)))
        names = list(chain.from_iterable(map(dict.keys, dicts)))
        n = len(names)
        v = np.fromiter(chain.from_iterable(map(dict.values, dicts)), dtype=np.float64, count=n)
        code, overflow = self.vocab.code, self.vocab.overflow
        # each distinct name looked up once, in the order first seen (the cap keeps the first)
        lookup = {name: code(name) if name else overflow for name in dict.fromkeys(names)}
        c = np.fromiter(map(lookup.__getitem__, names), dtype=np.int64, count=n)
        nb = self.counts.shape[1]
        idx = np.searchsorted(self.buckets, v, side="left")  # `le` buckets: (b[i-1], b[i]]
        flat = np.bincount(c * nb + idx, minlength=self.counts.size)
        self.counts += flat.reshape(self.counts.shape)
        self.sums += np.bincount(c, weights=v, minlength=self.sums.shape[0])

    def series(self) -> Iterable[tuple[str, np.ndarray, float]]:
        """(stage, counts per bucket, sum): every kept name (configured ones from the
        start, at 0), then `__other__` once anything was pooled."""
        for i, name in enumerate(self.vocab.values):
            yield name, self.counts[i], float(self.sums[i])
        o = self.vocab.overflow
        if self.counts[o].any():
            yield OTHER, self.counts[o], float(self.sums[o])

    def retune(self, names: Sequence[str] | None, max_stages: int, max_bytes: int) -> None:
        """Apply a reloaded `stages:` list or `limits.max_stages` in place. Names still
        kept keep their counts; a name no longer kept is pooled into `__other__` (so no
        counter goes down); new configured names start at 0."""
        self.vocab.max_bytes = max_bytes
        new_names = None if names is None else tuple(names)
        if new_names == self.names and max_stages == self.max_stages:
            return
        old_vocab, old_counts, old_sums = self.vocab, self.counts, self.sums
        self._build(new_names, max_stages, max_bytes)
        keep = set(new_names) if new_names is not None else None
        for i, name in enumerate(old_vocab.values):
            j = self.vocab.code(name) if keep is None or name in keep else self.vocab.overflow
            self.counts[j] += old_counts[i]
            self.sums[j] += old_sums[i]
        self.counts[self.vocab.overflow] += old_counts[old_vocab.overflow]
        self.sums[self.vocab.overflow] += old_sums[old_vocab.overflow]


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def stage_family(models: Iterable[tuple[str, StageLatency]]) -> HistogramMetricFamily:
    """The `ml_prediction_stage_latency_seconds` family of every model."""
    fam = HistogramMetricFamily(
        METRIC,
        "Latency of each stage of a prediction (preprocess, inference, ...) in seconds",
        labels=["model_name", "stage"],
    )
    for model, stages in models:
        les = [_le(b) for b in [*stages.buckets.tolist(), math.inf]]
        for name, counts, total in stages.series():
            cum = np.cumsum(counts).tolist()
            fam.add_metric(
                [model, name], [(le, float(c)) for le, c in zip(les, cum, strict=True)], total
            )
    return fam
