"""A batch of decoded events as the arrays the counters take: numeric features, category
codes, predictions and confidences."""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import cache
from itertools import chain, starmap
from operator import itemgetter
from typing import Any

import numpy as np

from sidecar.events import Event
from sidecar.stats.reference import category_key
from sidecar.vocab import Vocab


@cache
def _row_format(k: int) -> struct.Struct:
    return struct.Struct(f"{k}d")


def numeric_matrix(
    feats: list[Any], names: tuple[str, ...], getter: Callable[[Any], Any] | None
) -> tuple[np.ndarray, set[int], bool]:
    """Numeric features as an (n, k) matrix; also the rows holding a non-numeric string,
    and whether every event carried every numeric feature (the fast path)."""
    n, k = len(feats), len(names)
    if k == 0:
        return np.empty((n, 0)), set(), False
    get = getter if getter is not None else itemgetter(*names)
    try:
        # One C-level pass: itemgetter per event (a tuple of its k values, or the value),
        # and struct converts them to doubles several times faster than fromiter does.
        # Each tuple is packed as it is made, and its memory reused for the next.
        if k == 1:
            buf = bytearray(8 * n)
            struct.pack_into(f"{n}d", buf, 0, *map(get, feats))
        else:
            buf = bytearray().join(starmap(_row_format(k).pack, map(get, feats)))
        return np.frombuffer(buf, np.float64).reshape(n, k), set(), True
    except (KeyError, TypeError):  # an absent feature, or an event without features
        return _numeric_missing(feats, names)
    except struct.error:  # a None or a string among the values
        pass
    try:  # fromiter converts None to NaN and parses numeric strings
        got = map(get, feats)
        it = got if k == 1 else chain.from_iterable(got)
        return np.fromiter(it, np.float64, count=n * k).reshape(n, k), set(), True
    except (KeyError, TypeError, ValueError):  # as above, or a non-numeric string
        pass
    return _numeric_missing(feats, names)


def _numeric_missing(feats: list[Any], names: tuple[str, ...]) -> tuple[np.ndarray, set[int], bool]:
    out, bad = numeric_general(feats, names)
    return out, bad, False


def numeric_general(feats: list[Any], names: tuple[str, ...]) -> tuple[np.ndarray, set[int]]:
    """`numeric_matrix` for any batch, value by value where it must: the matrix (an absent
    or None value, or a non-numeric string, as NaN) and the rows holding a non-numeric
    string. The fast paths above give exactly this where they apply."""
    n, k = len(feats), len(names)
    flat = [f.get(nm) if f else None for f in feats for nm in names]
    try:
        return np.fromiter(flat, np.float64, count=n * k).reshape(n, k), set()
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
    return out.reshape(n, k), bad


def categorical_codes(feats: list[Any], names: tuple[str, ...], vocabs: list[Vocab]) -> np.ndarray:
    n, k = len(feats), len(names)
    out = np.full((n, k), -1, dtype=np.int32)
    for j, (name, vocab) in enumerate(zip(names, vocabs, strict=True)):
        col = [category_key(f.get(name)) if f else None for f in feats]
        out[:, j] = [-1 if v is None else vocab.code(v) for v in col]
    return out


def floats(values: list[Any]) -> np.ndarray:
    """`values` (floats, or None for a missing one) as float64, None as NaN: what
    `np.array(values, dtype=np.float64)` gives, several times faster when none is None."""
    n = len(values)
    buf = bytearray(8 * n)
    try:
        struct.pack_into(f"{n}d", buf, 0, *values)
    except struct.error:  # a None
        return np.array(values, dtype=np.float64)
    return np.frombuffer(buf, np.float64)


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
    return floats(raw), set()


def confidences(events: list[Event]) -> np.ndarray:
    conf = [ev.confidence for ev in events]
    if None in conf and any([ev.probabilities for ev in events]):
        for i, ev in enumerate(events):
            if conf[i] is None and ev.probabilities:
                p = ev.probabilities
                vals = p.values() if isinstance(p, dict) else p
                conf[i] = max(vals)
    return floats(conf)
