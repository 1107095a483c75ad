"""Labels and performance: label events scored against predictions, and CBPE estimates.

A label event carries the truth of a prediction. With its `prediction` it is scored at
once (`self_contained`); otherwise it is joined by `id` to a prediction this sidecar saw,
kept in `sidecar.label_store` for `labels.ttl_s` (`joined`). A label whose id waits for
no prediction is `unmatched`: the prediction was never seen here (another replica, a
label that came first, an id never sent) or it was dropped from the store (full, or past
its time at a purge). A label that finds its prediction older than `labels.ttl_s`, before
a purge dropped it, is `expired` and not scored. A label for an unknown model, a missing
`label`, a label of the wrong type or a class the model cannot count is `rejected`.

Every figure is a counter per model (`ModelPerformance`), so a fleet's accuracy over any
range is a PromQL ratio of sums. Estimated performance (confidence-based, as NannyML's
CBPE): each prediction with probabilities adds its (calibrated) probabilities to the row
of its predicted class in an expected confusion matrix; docs/statistics.md says what this
assumes.
"""

from __future__ import annotations

import math
from collections import Counter
from operator import attrgetter
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sidecar.config import ModelSpec
from sidecar.events import Event, Rejection
from sidecar.label_store import KIND_CLASS, KIND_DEAD, KIND_VALUE, PendingStore, id_hashes
from sidecar.stats.calibration import Calibration, normalized
from sidecar.stats.reference import category_key

if TYPE_CHECKING:
    from sidecar.config import LabelSettings
    from sidecar.stats.reference import Baseline
    from sidecar.vocab import Vocab

RESULTS = ("joined", "self_contained", "unmatched", "expired", "rejected")
_id = attrgetter("id")
_ts = attrgetter("ts")
_probabilities = attrgetter("probabilities")
MAX_CLASS_NAMES = 1 << 16
"""Class names the store may intern for its waiting predictions (all models together)."""


class ModelPerformance:
    """One model's label and performance counters (`ml_label_*`, expected confusion)."""

    def __init__(self, max_classes: int) -> None:
        size = max_classes + 1  # the class vocabulary's codes, `__other__` last
        self.results: Counter[str] = Counter()
        self.labeled = 0
        self.correct = 0
        self.confusion = np.zeros((size, size), dtype=np.int64)
        self.abs_error = 0.0
        self.sq_error = 0.0
        self.expected = np.zeros((size, size), dtype=np.float64)
        self.expected_correct = 0.0
        self.estimated = 0
        """Predictions whose probabilities were summed into `expected`."""

    def score_classes(self, predicted: np.ndarray, actual: np.ndarray) -> None:
        size = self.confusion.shape[0]
        self.labeled += int(predicted.size)
        self.correct += int((predicted == actual).sum())
        flat = np.bincount(predicted * size + actual, minlength=size * size)
        self.confusion += flat.reshape(size, size)

    def score_values(self, predicted: np.ndarray, actual: np.ndarray) -> None:
        err = np.abs(predicted - actual)
        self.labeled += int(predicted.size)
        self.abs_error += float(err.sum())
        self.sq_error += float((err * err).sum())


def is_classifier(t: ModelTracker, *values: object) -> bool:
    """Whether `t`'s labels are classes: its `task`, or else a categorical prediction type
    or a string among `values` (a prediction, a label)."""
    task = t.spec.task
    if task is not None:
        return task == "classification"
    return t.pred_kind == "categorical" or any(type(v) is str for v in values)


def class_name(value: object) -> str | None:
    """A label or prediction as a class name; None for a number that is not a class index."""
    if type(value) is float and not value.is_integer():
        return None
    return category_key(value)


Folded = tuple[list[Event], np.ndarray, np.ndarray | None]
"""A tracker's last ingest: accepted events, their predictions, their class codes or None."""
NOTHING_FOLDED: Folded = ([], np.empty(0), None)


class ModelTracker(Protocol):
    """What scoring needs of a model's tracker (sidecar.tracker, which imports this)."""

    folded: Folded

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> ModelSpec: ...
    @property
    def pred_kind(self) -> str | None: ...
    @property
    def class_vocab(self) -> Vocab: ...
    @property
    def performance(self) -> ModelPerformance: ...
    @property
    def baseline(self) -> Baseline | None: ...

    def class_codes(self, events: list[Event], preds: np.ndarray) -> np.ndarray: ...


class LabelBook:
    """The waiting predictions of every model, and the scoring of label events."""

    def __init__(self, settings: LabelSettings) -> None:
        self.settings = settings
        self.store = PendingStore(settings.max_pending)
        self.model_names: list[str] = []
        self._model_codes: dict[str, int] = {}
        self.class_names: list[str] = []
        self._class_codes: dict[str, int] = {}

    def configure(self, settings: LabelSettings) -> None:
        """A reload's settings: the TTL applies at once, a smaller bound at the next add."""
        self.settings = settings
        self.store.max_pending = settings.max_pending

    def model_code(self, model: str) -> int | None:
        code = self._model_codes.get(model)
        if code is None:
            if len(self.model_names) >= 1 << 16:
                return None
            code = self._model_codes[model] = len(self.model_names)
            self.model_names.append(model)
        return code

    def class_code(self, name: str) -> int:
        code = self._class_codes.get(name)
        if code is None:
            if len(self.class_names) >= MAX_CLASS_NAMES:
                return -1
            code = self._class_codes[name] = len(self.class_names)
            self.class_names.append(name)
        return code

    # ------------------------------------------------------------ predictions
    def take_folded(self, t: ModelTracker, now: float) -> None:
        """`observe` what `t`'s last ingest folded (whichever transport brought it), and
        let go of it: it is not held until the next batch."""
        events, preds, codes = t.folded
        t.folded = NOTHING_FOLDED
        if events:
            self.observe(t, events, preds, now, codes)

    def observe(
        self,
        t: ModelTracker,
        events: list[Event],
        preds: np.ndarray,
        now: float,
        codes: np.ndarray | None = None,
    ) -> None:
        """A batch of `t`'s accepted predictions: the expected confusion of those with
        probabilities, and those with an `id` wait for their label. `codes`: their class
        codes when the ingest already has them."""
        has_probs = any(map(_probabilities, events))
        # no list of ids for the common batch that has none (any() stops at the first)
        has_ids = self.settings.enabled and any(map(_id, events))
        if not (has_probs or has_ids):
            return
        if codes is None or int(codes.min(initial=0)) < 0:
            codes = self._codes_where_needed(
                t, events, preds, codes, has_probs=has_probs, has_ids=has_ids
            )
        if has_probs and t.spec.task != "regression":
            _expected(t, events, codes)
        if has_ids:
            self._wait(t, events, list(map(_id, events)), codes, now)

    @staticmethod
    def _codes_where_needed(
        t: ModelTracker,
        events: list[Event],
        preds: np.ndarray,
        codes: np.ndarray | None,
        *,
        has_probs: bool,
        has_ids: bool,
    ) -> np.ndarray:
        """Class codes for the events that have probabilities or an id (those the book
        reads), where the ingest did not give them (it gives codes to events with a
        confidence): an event with none of these gives its class no code, as one by one."""
        n = len(events)
        want = np.zeros(n, dtype=bool)
        if has_probs:
            want |= np.fromiter(map(bool, map(_probabilities, events)), bool, n)
        if has_ids:
            want |= np.fromiter((i is not None for i in map(_id, events)), bool, n)
        out = np.full(n, -1, dtype=np.int64) if codes is None else codes.copy()
        rows = np.flatnonzero(want & (out < 0))
        if rows.size:
            out[rows] = t.class_codes([events[i] for i in rows.tolist()], preds[rows])
        return out

    def _wait(
        self,
        t: ModelTracker,
        events: list[Event],
        ids: list[str | None],
        codes: np.ndarray,
        now: float,
    ) -> None:
        model = self.model_code(t.name)
        if model is None:
            return
        if None in ids:
            rows = [i for i, x in enumerate(ids) if x is not None]
            events = [events[i] for i in rows]
            codes = codes[rows]
        task = t.spec.task
        n = len(events)
        if task is None and t.pred_kind != "categorical":
            # per event, as is_classifier decides for labels
            classes = np.array(
                [bool(ev.probabilities) or type(ev.prediction) is str for ev in events]
            )
        else:
            classes = np.full(n, task != "regression")
        values = np.full(n, math.nan)
        if classes.any():
            label = t.class_vocab.label
            uniq, inv = np.unique(codes[classes], return_inverse=True)
            table = np.array([self.class_code(label(int(c))) for c in uniq], dtype=np.float64)
            values[classes] = table[inv]
        if not classes.all():
            raw = [ev.prediction for ev, c in zip(events, classes.tolist(), strict=True) if not c]
            values[~classes] = [p if type(p) is float else math.nan for p in raw]
        kinds = np.where(classes, KIND_CLASS, KIND_VALUE).astype(np.uint8)
        # no number to compare, or no room left to name the class: nothing to wait for
        kinds[~np.isfinite(values) | (classes & (values < 0))] = KIND_DEAD
        times = np.array(list(map(_ts, events)), dtype=np.float64)  # None reads as NaN
        times[np.isnan(times)] = now
        keep = kinds != KIND_DEAD
        waiting = [x for x in ids if x is not None]
        if not keep.all():
            waiting = [x for x, k in zip(waiting, keep.tolist(), strict=True) if k]
            times, values, kinds = times[keep], values[keep], kinds[keep]
        self.store.add(id_hashes(t.name, waiting), model, times, values, kinds)

    def expire(self, now: float) -> int:
        return self.store.expire(now - self.settings.ttl_s)

    # ------------------------------------------------------------ labels
    def score(self, t: ModelTracker, events: list[Event], now: float) -> list[Rejection]:
        """Score `t`'s label events; returns the rejected ones."""
        perf = t.performance
        rejected: list[Rejection] = []
        own: list[Event] = []
        waiting: list[Event] = []
        for ev in events:
            if ev.label is None:
                rejected.append(Rejection("missing_field", "a label event needs `label`"))
            elif ev.prediction is not None:
                own.append(ev)
            elif ev.id is not None:
                waiting.append(ev)
            else:
                rejected.append(
                    Rejection("missing_field", "a label event needs `id` or `prediction`")
                )
        if own:
            rejected += self._self_contained(t, own)
        if waiting:
            rejected += self._joined(t, waiting, now)
        perf.results["rejected"] += len(rejected)
        return rejected

    def _self_contained(self, t: ModelTracker, events: list[Event]) -> list[Rejection]:
        rejected: list[Rejection] = []
        cp: list[int] = []
        ca: list[int] = []
        vp: list[float] = []
        va: list[float] = []
        for ev in events:
            if is_classifier(t, ev.prediction, ev.label):
                actual, why = _class_of(t, ev.label, ev)
                predicted, pwhy = _class_of(t, ev.prediction, ev, prediction=True)
                if why is not None or pwhy is not None:
                    rejected.append(why or pwhy)  # type: ignore[arg-type]
                    continue
                cp.append(predicted)
                ca.append(actual)
            elif type(ev.label) is str or type(ev.prediction) is str:
                rejected.append(_wrong_type(ev, "a regression label and prediction are numbers"))
            else:
                vp.append(float(ev.prediction))  # type: ignore[arg-type]
                va.append(float(ev.label))  # type: ignore[arg-type]
        perf = t.performance
        if cp:
            perf.score_classes(np.array(cp, np.int64), np.array(ca, np.int64))
        if vp:
            perf.score_values(np.array(vp), np.array(va))
        perf.results["self_contained"] += len(cp) + len(vp)
        return rejected

    def _joined(self, t: ModelTracker, events: list[Event], now: float) -> list[Rejection]:
        perf = t.performance
        got = self.store.take(id_hashes(t.name, [ev.id or "" for ev in events]))
        late = (got.kind != KIND_DEAD) & (got.ts < now - self.settings.ttl_s)
        perf.results["unmatched"] += int((got.kind == KIND_DEAD).sum())
        perf.results["expired"] += int(late.sum())
        rejected: list[Rejection] = []
        cp: list[int] = []
        ca: list[int] = []
        vp: list[float] = []
        va: list[float] = []
        kinds = got.kind.tolist()
        values = got.value.tolist()
        # a batch holds few distinct classes: each is looked up once
        actual_of: dict[tuple[type, object], int] = {}
        predicted_of: dict[float, int] = {}
        for i in np.flatnonzero((got.kind != KIND_DEAD) & ~late).tolist():
            ev = events[i]
            label = ev.label
            if kinds[i] == KIND_CLASS:
                actual = actual_of.get((type(label), label))
                if actual is None:
                    actual, why = _class_of(t, label, ev)
                    if why is not None:
                        rejected.append(why)
                        continue
                    actual_of[(type(label), label)] = actual
                predicted = predicted_of.get(values[i])
                if predicted is None:
                    name = self.class_names[int(values[i])]
                    predicted = predicted_of[values[i]] = t.class_vocab.code(name)
                cp.append(predicted)
                ca.append(actual)
            elif type(label) is str:
                rejected.append(_wrong_type(ev, "the prediction was a number, the label is not"))
            else:
                vp.append(values[i])
                va.append(float(label))  # type: ignore[arg-type]
        if cp:
            perf.score_classes(np.array(cp, np.int64), np.array(ca, np.int64))
        if vp:
            perf.score_values(np.array(vp), np.array(va))
        perf.results["joined"] += len(cp) + len(vp)
        return rejected


def _wrong_type(ev: Event, why: str) -> Rejection:
    return Rejection("wrong_type", f"label {ev.id or ''!r:.80}: {why}")


def _class_of(
    t: ModelTracker, value: object, ev: Event, prediction: bool = False
) -> tuple[int, Rejection | None]:
    """The class vocabulary code of a label (or a self-contained prediction), or why not:
    a class the vocabulary has no room for is not turned into a new series."""
    what = "prediction" if prediction else "label"
    name = class_name(value)
    if name is None:
        return -1, _wrong_type(ev, f"the {what} {value!r} is not a class (nor a class index)")
    vocab = t.class_vocab
    code = vocab.code(name)
    if code == vocab.overflow and name not in vocab.index:
        return -1, Rejection(
            "unknown_class",
            f"label {ev.id or ''!r:.80}: class {name[:80]!r} of the {what}: the model's "
            f"max_classes ({vocab.cap}) classes are all taken, or the name is too long",
        )
    return code, None


def _expected(t: ModelTracker, events: list[Event], codes: np.ndarray) -> None:
    """Add each prediction's (calibrated) probabilities to its predicted class's row."""
    perf = t.performance
    vocab = t.class_vocab
    size = perf.expected.shape[0]
    b = t.baseline
    perf_ref = b.performance if b is not None else None
    cal: Calibration | None = perf_ref.calibration if perf_ref is not None else None
    by_len: dict[int, list[int]] = {}
    raw = [ev.probabilities for ev in events]
    if type(raw[0]) is list:
        try:  # the common batch: every event a list of one length, in one C-level pass
            table = np.array(raw, dtype=np.float64)
        except (ValueError, TypeError):  # ragged, a dict, or an event without any
            table = None
        if table is not None and table.ndim == 2 and table.shape[1]:
            _add_lists(t, cal, codes, normalized(table))
            return
    for i, ev in enumerate(events):
        p = ev.probabilities
        if isinstance(p, list) and p:
            by_len.setdefault(len(p), []).append(i)
        elif isinstance(p, dict) and p:
            names = list(p)
            probs = normalized(np.array([list(p.values())], dtype=np.float64))[0]
            cols = np.array([vocab.code(category_key(n) or "") for n in names], np.int64)
            _add_rows(perf, size, codes[[i]], cols, probs[None, :])
    for rows in by_len.values():
        probs = normalized(np.array([events[i].probabilities for i in rows], dtype=np.float64))
        _add_lists(t, cal, codes[rows], probs)


def _add_lists(
    t: ModelTracker, cal: Calibration | None, pred: np.ndarray, probs: np.ndarray
) -> None:
    """Probability lists of one length k: the classes are "0" .. "k - 1"."""
    k = probs.shape[1]
    if cal is not None and cal.classes == k:
        probs = cal.apply(probs)
    cols = np.array([t.class_vocab.code(str(j)) for j in range(k)], np.int64)
    _add_rows(t.performance, t.performance.expected.shape[0], pred, cols, probs)


def _add_rows(
    perf: ModelPerformance, size: int, pred: np.ndarray, cols: np.ndarray, probs: np.ndarray
) -> None:
    flat = (pred[:, None] * size + cols[None, :]).ravel()
    perf.expected += np.bincount(flat, weights=probs.ravel(), minlength=size * size).reshape(
        size, size
    )
    perf.expected_correct += float((probs * (cols[None, :] == pred[:, None])).sum())
    perf.estimated += int(pred.size)
