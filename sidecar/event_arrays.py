"""A batch of decoded events as the arrays the counters take: numeric features, category
codes, predictions and confidences."""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any

import numpy as np

from sidecar.events import Event
from sidecar.stats.reference import category_key
from sidecar.vocab import Vocab


def numeric_matrix(
    feats: list[Any], names: tuple[str, ...], getter: Callable[[Any], Any] | None
) -> tuple[np.ndarray, set[int], bool]:
    """Numeric features as an (n, k) matrix; also the rows holding a non-numeric string,
    and whether every event carried every numeric feature (the fast path)."""
    n, k = len(feats), len(names)
    if k == 0:
        return np.empty((n, 0)), set(), False
    try:  # one C-level pass: itemgetter per event, fromiter converts (None -> NaN)
        got = map(getter, feats)  # type: ignore[arg-type]
        it = got if k == 1 else chain.from_iterable(got)
        return np.fromiter(it, np.float64, count=n * k).reshape(n, k), set(), True
    except (KeyError, TypeError, ValueError):  # absent feature, no features, bad string
        pass
    flat = [f.get(nm) if f else None for f in feats for nm in names]
    try:
        return np.fromiter(flat, np.float64, count=n * k).reshape(n, k), set(), False
    except ValueError:
        pass
    out = np.empty(n * k)
    bad: set[int] = set()
    for i, v in enumerate(flat):
        try:
            out[i] = np.nan if v is None else float(v)
        except ValueError:
            out[i] = np.nan
            bad.add(i // k)
    return out.reshape(n, k), bad, False


def categorical_codes(feats: list[Any], names: tuple[str, ...], vocabs: list[Vocab]) -> np.ndarray:
    n, k = len(feats), len(names)
    out = np.full((n, k), -1, dtype=np.int32)
    for j, (name, vocab) in enumerate(zip(names, vocabs, strict=True)):
        col = [category_key(f.get(name)) if f else None for f in feats]
        out[:, j] = [-1 if v is None else vocab.code(v) for v in col]
    return out


def prediction_array(
    events: list[Event], pred_vocab: Vocab | None, pred_kind: str | None
) -> tuple[np.ndarray, set[int]]:
    raw = [ev.prediction for ev in events]
    if pred_vocab is not None:
        vocab = pred_vocab
        texts = [category_key(p) for p in raw]
        return np.array([-1 if t is None else vocab.code(t) for t in texts], dtype=np.int32), set()
    if str in set(map(type, raw)):
        # a numeric prediction rejects a string; not configured, a string just skips the summary
        bad = {i for i, p in enumerate(raw) if type(p) is str} if pred_kind == "numeric" else set()
        return np.array([None if type(p) is str else p for p in raw], dtype=np.float64), bad
    return np.array(raw, dtype=np.float64), set()


def confidences(events: list[Event]) -> np.ndarray:
    conf = [ev.confidence for ev in events]
    if None in conf and any([ev.probabilities for ev in events]):
        for i, ev in enumerate(events):
            if conf[i] is None and ev.probabilities:
                p = ev.probabilities
                vals = p.values() if isinstance(p, dict) else p
                conf[i] = max(vals)
    return np.array(conf, dtype=np.float64)
