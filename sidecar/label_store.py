"""Predictions waiting for their label: a bounded, persisted table keyed by a hash of the id.

Each waiting prediction is one row of fixed-size arrays kept in arrival order (a ring):
the 64-bit hash of (model, id), the model's code, the time it was seen (whole seconds), and
what it predicted (a class's code in the store's class table, or a regression value).
An open-addressing index (linear probing, at most half full) maps a hash to its row, so a
batch of labels is joined with a few vectorized probes instead of a dict lookup each.

Memory per waiting prediction: 23 bytes a ring row (8 hash, 2 model, 4 time, 8 value,
1 kind), the ring up to a quarter larger than `max_pending` (joined rows wait there until
it is compacted), and 4-byte index slots, at least twice as many as ring rows: at most
about 45 bytes per waiting prediction when full (bench/labels_bench.py measures it),
against a Python dict's ~200. A joined or dropped row leaves a tombstone in the index; the
index is rebuilt when tombstones reach a quarter of it, and when the ring grows (it
doubles) or is compacted. When `max_pending` predictions wait, the oldest make room.

Ids are hashed with FNV-1a over their code points and splitmix64's finalizer, vectorized
over a batch (blake2b for ids over 64 characters). Two ids that hash alike (a chance of
about n^2 / 2^65: 3e-8 with a million waiting) would join one's label to the other's
prediction; the figures this feeds are sums over millions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EMPTY = 0
TOMBSTONE = -1
KIND_DEAD = 0
KIND_CLASS = 1
KIND_VALUE = 2
_MIN_CAPACITY = 1024


_FNV_PRIME = np.uint64(0x100000001B3)
_MASK64 = (1 << 64) - 1
SHORT_ID = 64
"""Ids of up to this many characters are hashed together, column by column (vectorized);
longer ones one by one with blake2b (a matrix as wide as the longest would not do)."""


def _model_seed(model: str) -> int:
    digest = hashlib.blake2b(model.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every output bit depends on every input bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = h ^ (h >> np.uint64(31))
    return out


def id_hash(model: str, ident: str) -> int:
    """`id_hashes` of one id, written plainly: the definition the vectorized one follows."""
    if len(ident) > SHORT_ID:
        return int(_long_hashes(model, [ident])[0])
    h = _model_seed(model)
    for ch in ident:  # FNV-1a over code points
        h = ((h ^ ord(ch)) * 0x100000001B3) & _MASK64
    h ^= len(ident)
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _MASK64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _MASK64
    h ^= h >> 31
    return h | 1


def id_hashes(model: str, ids: Sequence[str]) -> np.ndarray:
    """The 64-bit keys of (model, id) for a batch of ids: stable across processes and
    versions (they are persisted), odd (never 0, the ring's "no key"). Not cryptographic:
    distinct ids collide with a chance of about 2^-64 per pair."""
    n = len(ids)
    lengths = np.fromiter(map(len, ids), np.int64, count=n)
    h = np.full(n, _model_seed(model), dtype=np.uint64)
    long = lengths > SHORT_ID
    short = np.flatnonzero(~long) if long.any() else None
    chars = np.array(ids if short is None else [ids[i] for i in short.tolist()], dtype=np.str_)
    if chars.size:
        width = chars.dtype.itemsize // 4
        codes = chars.view(np.uint32).reshape(chars.size, width)
        lens = lengths if short is None else lengths[short]
        hs = h if short is None else h[short]
        for j in range(width):
            np.copyto(hs, (hs ^ codes[:, j]) * _FNV_PRIME, where=j < lens)
        hs = _mix(hs ^ lens.astype(np.uint64))
        if short is None:
            h = hs
        else:
            h[short] = hs
    if short is not None:
        where = np.flatnonzero(long)
        h[where] = _long_hashes(model, [ids[i] for i in where.tolist()])
    out: np.ndarray = h | np.uint64(1)
    return out


def _long_hashes(model: str, ids: Sequence[str]) -> np.ndarray:
    key = model.encode("utf-8", "surrogatepass")[:64]
    blake = hashlib.blake2b
    return np.fromiter(
        (
            int.from_bytes(
                blake(i.encode("utf-8", "surrogatepass"), digest_size=8, key=key).digest(), "little"
            )
            | 1
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


@dataclass
class Taken:
    """What a batch of label lookups found: per label, the row's kind (KIND_DEAD: none),
    its model code, time and value."""

    kind: np.ndarray
    model: np.ndarray
    ts: np.ndarray
    value: np.ndarray


class PendingStore:
    """The waiting predictions; touched from the event loop only (copied for writing)."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.evicted_full = 0
        self.evicted_expired = 0
        self._alloc(min(_MIN_CAPACITY, self.ring_max))
        self.head = 0  # oldest row
        self.size = 0  # rows from head, live or dead (joined)
        self.live = 0

    # ------------------------------------------------------------------ layout
    @property
    def ring_max(self) -> int:
        """Rows the ring may grow to: a quarter more than `max_pending`, room that joined
        rows take until the ring is compacted."""
        return self.max_pending + max(1, self.max_pending // 4)

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys = np.zeros(capacity, dtype=np.uint64)
        self.models = np.zeros(capacity, dtype=np.uint16)
        self.times = np.zeros(capacity, dtype=np.uint32)
        self.values = np.zeros(capacity, dtype=np.float64)
        self.kinds = np.zeros(capacity, dtype=np.uint8)
        self._index_for(capacity)

    def _index_for(self, capacity: int) -> None:
        slots = 1 << max(4, (2 * capacity - 1).bit_length())
        self.index = np.zeros(slots, dtype=np.int32)
        self.mask = np.uint64(slots - 1)
        self.tombstones = 0

    def nbytes(self) -> int:
        arrays = (self.keys, self.models, self.times, self.values, self.kinds, self.index)
        return sum(a.nbytes for a in arrays)

    def _rows(self) -> np.ndarray:
        """Ring positions from the oldest row to the newest."""
        return (self.head + np.arange(self.size)) % self.capacity

    def _grow(self, need: int) -> None:
        cap = self.capacity
        while cap < need and cap < self.ring_max:
            cap = min(cap * 2, self.ring_max)
        if cap != self.capacity:
            self._relayout(cap)

    def _relayout(self, capacity: int) -> None:
        """The live rows, oldest first, at the start of new arrays of `capacity` rows."""
        rows = self._rows()
        rows = rows[self.kinds[rows] != KIND_DEAD][-capacity:]
        old = (self.keys[rows], self.models[rows], self.times[rows], self.values[rows])
        kinds = self.kinds[rows]
        self._alloc(capacity)
        n = rows.size
        self.keys[:n], self.models[:n], self.times[:n], self.values[:n] = old
        self.kinds[:n] = kinds
        self.head, self.size, self.live = 0, n, n
        self._reindex()

    def _reindex(self) -> None:
        self._index_for(self.capacity)
        rows = self._rows()
        rows = rows[self.kinds[rows] != KIND_DEAD]
        self._insert_index(self.keys[rows], rows.astype(np.int32))

    # ------------------------------------------------------------------ index
    def _insert_index(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Point each key's slot at its row; a key already there (a repeated id) is
        replaced, and its older row dropped. Later keys of the batch win."""
        index, mask = self.index, self.mask
        slot = keys & mask
        todo = np.arange(keys.size)
        while todo.size:
            s = slot[todo].astype(np.int64)
            occ = index[s]
            same = np.zeros(todo.size, dtype=bool)
            used = occ > 0
            if used.any():
                same[used] = self.keys[occ[used] - 1] == keys[todo[used]]
            free = occ == EMPTY
            claim = free | same
            if claim.any():
                c = np.flatnonzero(claim)
                # one key per slot this round: the first; the others probe on
                _, first = np.unique(s[c], return_index=True)
                won = c[first]
                replaced = index[s[won]]
                old = replaced[replaced > 0] - 1
                if old.size:
                    self.kinds[old] = KIND_DEAD
                    self.live -= int(old.size)
                index[s[won]] = rows[todo[won]] + 1
                done = np.zeros(todo.size, dtype=bool)
                done[won] = True
                moved = ~done
                slot[todo[moved & ~claim]] = (slot[todo[moved & ~claim]] + np.uint64(1)) & mask
                todo = todo[moved]
            else:
                slot[todo] = (slot[todo] + np.uint64(1)) & mask

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per key: its row (-1 when absent) and its index slot."""
        index, mask = self.index, self.mask
        found = np.full(keys.size, -1, dtype=np.int64)
        where = np.full(keys.size, -1, dtype=np.int64)
        slot = keys & mask
        todo = np.arange(keys.size)
        while todo.size:
            s = slot[todo].astype(np.int64)
            occ = index[s]
            hit = np.zeros(todo.size, dtype=bool)
            used = occ > 0
            hit[used] = self.keys[occ[used] - 1] == keys[todo[used]]
            found[todo[hit]] = occ[hit] - 1
            where[todo[hit]] = s[hit]
            go = ~hit & (occ != EMPTY)
            todo = todo[go]
            slot[todo] = (slot[todo] + np.uint64(1)) & mask
        return found, where

    # ------------------------------------------------------------------ API
    def __len__(self) -> int:
        return self.live

    def add(
        self,
        keys: np.ndarray,
        model: int,
        times: np.ndarray,
        values: np.ndarray,
        kinds: np.ndarray,
    ) -> None:
        """Predictions that wait: the oldest rows make room when the store is full."""
        n = int(keys.size)
        if n == 0:
            return
        if n > self.max_pending:  # only the newest fit
            keys, times, values, kinds = (
                keys[-self.max_pending :],
                times[-self.max_pending :],
                values[-self.max_pending :],
                kinds[-self.max_pending :],
            )
            self.evicted_full += n - self.max_pending
            n = self.max_pending
        excess = self.live + n - self.max_pending
        if excess > 0:  # full: the oldest waiting predictions go
            self._drop_oldest_live(excess)
        if self.size + n > self.capacity:
            self._grow(self.size + n)
        if self.size + n > self.capacity:
            # the ring is at its largest, a quarter over max_pending, and at least that
            # quarter is rows already joined: closing the gaps costs a few moves per row
            self._relayout(self.capacity)
        rows = (self.head + self.size + np.arange(n)) % self.capacity
        self.keys[rows] = keys
        self.models[rows] = model
        self.times[rows] = np.clip(times, 0, 2**32 - 1).astype(np.uint32)
        self.values[rows] = values
        self.kinds[rows] = kinds
        self.size += n
        self.live += n
        self._insert_index(keys, rows.astype(np.int32))
        self._maybe_reindex()

    def take(self, keys: np.ndarray) -> Taken:
        """Remove and return the rows of these keys; a key found twice in the batch is
        taken by its first label only."""
        rows, slots = self._find(keys)
        hit = np.flatnonzero(rows >= 0)
        if hit.size:
            _, first = np.unique(rows[hit], return_index=True)
            if first.size != hit.size:
                keep = np.zeros(hit.size, dtype=bool)
                keep[first] = True
                rows[hit[~keep]] = -1
                hit = hit[keep]
        got = rows[hit]
        out = Taken(
            kind=np.zeros(keys.size, dtype=np.uint8),
            model=np.zeros(keys.size, dtype=np.uint16),
            ts=np.zeros(keys.size, dtype=np.float64),
            value=np.zeros(keys.size, dtype=np.float64),
        )
        out.kind[hit] = self.kinds[got]
        out.model[hit] = self.models[got]
        out.ts[hit] = self.times[got]
        out.value[hit] = self.values[got]
        self.kinds[got] = KIND_DEAD
        self.index[slots[hit]] = TOMBSTONE
        self.tombstones += int(hit.size)
        self.live -= int(hit.size)
        self._trim_head()
        self._maybe_reindex()
        return out

    def expire(self, before: float) -> int:
        """Drop waiting predictions seen before `before` (Unix seconds); returns how many."""
        if self.size == 0:
            return 0
        rows = self._rows()
        old = self.times[rows] < before
        # arrival order is time order up to a clock step: drop the leading run only, and
        # the stragglers behind a newer row at the next purge
        n = int(np.argmin(old)) if not old.all() else self.size
        return self._drop_oldest(n, expired=True) if n else 0

    def _drop_oldest_live(self, k: int) -> int:
        """Drop the `k` oldest waiting predictions (and the joined rows among them),
        looking at no more rows than it drops."""
        cap = self.capacity
        seen = dropped = 0
        while dropped < k and seen < self.size:
            start = (self.head + seen) % cap
            m = min(max(k - dropped, 1024), self.size - seen, cap - start)
            alive = np.cumsum(self.kinds[start : start + m] != KIND_DEAD)
            if alive.size and dropped + int(alive[-1]) >= k:
                m = int(np.searchsorted(alive, k - dropped)) + 1
                alive = alive[:m]
            dropped += int(alive[-1]) if alive.size else 0
            seen += m
        return self._drop_oldest(seen, expired=False)

    def _drop_oldest(self, n: int, expired: bool) -> int:
        rows = (self.head + np.arange(n)) % self.capacity
        alive = rows[self.kinds[rows] != KIND_DEAD]
        if alive.size:
            _, slots = self._find(self.keys[alive])
            ok = slots >= 0
            self.index[slots[ok]] = TOMBSTONE
            self.tombstones += int(ok.sum())
            self.kinds[alive] = KIND_DEAD
            self.live -= int(alive.size)
            if expired:
                self.evicted_expired += int(alive.size)
            else:
                self.evicted_full += int(alive.size)
        self.head = (self.head + n) % self.capacity
        self.size -= n
        self._maybe_reindex()
        return int(alive.size)

    def _trim_head(self) -> None:
        """Rows joined at the front of the ring are free space: move the head past them,
        a chunk at a time (a join must not cost a pass over a million rows)."""
        while self.size and self.kinds[self.head] == KIND_DEAD:
            n = min(4096, self.size, self.capacity - self.head)
            alive = np.flatnonzero(self.kinds[self.head : self.head + n] != KIND_DEAD)
            k = int(alive[0]) if alive.size else n
            self.head = (self.head + k) % self.capacity
            self.size -= k

    def _maybe_reindex(self) -> None:
        if self.tombstones * 4 >= self.index.size:
            self._reindex()

    # ------------------------------------------------------------------ state
    def arrays(self) -> dict[str, np.ndarray]:
        """The live rows, oldest first: what a snapshot writes."""
        rows = self._rows()
        rows = rows[self.kinds[rows] != KIND_DEAD]
        return {
            "keys": self.keys[rows].copy(),
            "models": self.models[rows].copy(),
            "times": self.times[rows].copy(),
            "values": self.values[rows].copy(),
            "kinds": self.kinds[rows].copy(),
        }

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the content with saved rows (already checked), oldest first."""
        n = int(arrays["keys"].size)
        keep = slice(max(0, n - self.max_pending), n)
        n = min(n, self.max_pending)
        cap = min(_MIN_CAPACITY, self.ring_max)
        while cap < n:
            cap = min(cap * 2, self.ring_max)
        self._alloc(cap)
        self.keys[:n] = arrays["keys"][keep]
        self.models[:n] = arrays["models"][keep]
        self.times[:n] = arrays["times"][keep]
        self.values[:n] = arrays["values"][keep]
        self.kinds[:n] = arrays["kinds"][keep]
        self.head, self.size, self.live = 0, n, n
        self._reindex()
        self.live = int((self.kinds[:n] != KIND_DEAD).sum())
