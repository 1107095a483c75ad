"""The store of predictions waiting for their label, against a dict doing the same."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.label_store import KIND_CLASS, KIND_DEAD, KIND_VALUE, PendingStore, id_hash, id_hashes


def _add(store: PendingStore, ids: list[str], ts: float, values: list[float]) -> None:
    keys = id_hashes("m", ids)
    store.add(
        keys,
        0,
        np.full(len(ids), ts),
        np.array(values, dtype=np.float64),
        np.full(len(ids), KIND_VALUE, np.uint8),
    )


def test_hashes_are_stable_odd_and_per_model() -> None:
    assert id_hash("m", "a") == int(id_hashes("m", ["a"])[0])
    assert id_hash("m", "a") % 2 == 1
    assert id_hash("m", "a") != id_hash("n", "a")
    assert id_hash("m", "a") != id_hash("m", "b")
    # persisted: a new version must give the same keys
    assert id_hash("fraud", "req-1") == 0xD51D0DB3648C180B
    assert id_hash("m", "x" * 70) == 0x7A6274A67D4719B
    assert id_hash("m", "a\x00") != id_hash("m", "a")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=40), st.text(max_size=10))
def test_batch_hashes_equal_the_plain_definition(ids: list[str], model: str) -> None:
    """The vectorized hash (mixed lengths, past SHORT_ID too, any code point) is the
    per-id definition, whatever else is in the batch."""
    got = id_hashes(model, ids).tolist()
    assert got == [id_hash(model, i) for i in ids]
    assert len(set(got)) == len(set(ids))


def test_a_prediction_is_taken_once_by_its_label() -> None:
    store = PendingStore(100)
    _add(store, ["a", "b", "c"], 10.0, [1.0, 2.0, 3.0])
    got = store.take(id_hashes("m", ["c", "x", "a", "c"]))
    assert got.kind.tolist() == [KIND_VALUE, KIND_DEAD, KIND_VALUE, KIND_DEAD]
    assert got.value[[0, 2]].tolist() == [3.0, 1.0]
    assert got.ts[0] == 10.0
    assert len(store) == 1
    assert store.take(id_hashes("m", ["a", "b"])).kind.tolist() == [KIND_DEAD, KIND_VALUE]
    assert len(store) == 0


def test_a_repeated_id_keeps_the_latest_prediction() -> None:
    store = PendingStore(100)
    _add(store, ["a", "a"], 1.0, [1.0, 2.0])
    _add(store, ["a"], 2.0, [3.0])
    assert len(store) == 1
    got = store.take(id_hashes("m", ["a"]))
    assert got.value.tolist() == [3.0]


def test_full_store_drops_the_oldest_and_counts_them() -> None:
    store = PendingStore(1000)
    for start in range(0, 2500, 100):
        _add(store, [f"i{j}" for j in range(start, start + 100)], float(start), [0.0] * 100)
    assert len(store) == 1000
    assert store.evicted_full == 1500
    got = store.take(id_hashes("m", [f"i{j}" for j in range(2500)]))
    found = np.flatnonzero(got.kind != KIND_DEAD)
    assert found.tolist() == list(range(1500, 2500))


def test_expire_drops_what_is_older_and_counts_it() -> None:
    store = PendingStore(100)
    _add(store, ["a", "b"], 10.0, [0.0, 0.0])
    _add(store, ["c"], 20.0, [0.0])
    assert store.expire(15.0) == 2
    assert store.evicted_expired == 2
    assert len(store) == 1
    got = store.take(id_hashes("m", ["a", "c"]))
    assert got.kind.tolist() == [KIND_DEAD, KIND_VALUE]


def test_joins_leave_room_instead_of_evicting() -> None:
    store = PendingStore(1024)
    for round_ in range(20):
        ids = [f"r{round_}-{j}" for j in range(1000)]
        _add(store, ids, float(round_), [float(round_)] * 1000)
        assert store.take(id_hashes("m", ids[:990])).kind.tolist().count(KIND_VALUE) == 990
    # 10 of each round wait; only the oldest made room, and only once the store was full
    assert len(store) + store.evicted_full == 200
    assert len(store) <= 1024


def test_arrays_round_trip_through_load() -> None:
    store = PendingStore(50)
    _add(store, [f"i{j}" for j in range(40)], 5.0, list(range(40)))
    store.take(id_hashes("m", ["i3", "i7"]))
    saved = store.arrays()
    again = PendingStore(50)
    again.load(saved)
    assert len(again) == 38
    got = again.take(id_hashes("m", [f"i{j}" for j in range(40)]))
    assert np.flatnonzero(got.kind == KIND_DEAD).tolist() == [3, 7]
    assert got.value[got.kind != KIND_DEAD].tolist() == [
        float(j) for j in range(40) if j not in (3, 7)
    ]


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "take", "expire"]),
        st.lists(st.integers(0, 60), min_size=0, max_size=30),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_matches_a_dict_when_nothing_is_evicted(script: list[tuple[str, list[int]]]) -> None:
    """Adds, takes and purges in any order give what a dict keyed by id gives."""
    store = PendingStore(10_000)
    ref: dict[str, tuple[float, float]] = {}
    clock = 0.0
    for op, ints in script:
        clock += 1.0
        ids = [f"id{i}" for i in ints]
        if op == "add":
            vals = [float(i) + clock for i in ints]
            if ids:
                store.add(
                    id_hashes("m", ids),
                    0,
                    np.full(len(ids), clock),
                    np.array(vals),
                    np.full(len(ids), KIND_CLASS, np.uint8),
                )
            for i, v in zip(ids, vals, strict=True):
                ref.pop(i, None)  # re-added: the newest, at the end
                ref[i] = (clock, v)
        elif op == "take":
            got = store.take(id_hashes("m", ids)) if ids else None
            seen: set[str] = set()
            for k, i in enumerate(ids):
                want = ref.pop(i, None) if i not in seen else None
                seen.add(i)
                assert got is not None
                if want is None:
                    assert got.kind[k] == KIND_DEAD
                else:
                    assert got.kind[k] == KIND_CLASS
                    assert (got.ts[k], got.value[k]) == want
        else:
            cut = clock - (ints[0] if ints else 0)
            # the store drops the leading run of older rows (arrival order)
            dropped = 0
            for i in list(ref):
                if ref[i][0] < cut:
                    del ref[i]
                    dropped += 1
                else:
                    break
            assert store.expire(cut) == dropped
        assert len(store) == len(ref)


@pytest.mark.parametrize("n", [1, 1023, 1024, 1025, 5000])
def test_growth_keeps_every_row(n: int) -> None:
    store = PendingStore(1 << 20)
    ids = [f"x{j}" for j in range(n)]
    _add(store, ids, 1.0, list(map(float, range(n))))
    got = store.take(id_hashes("m", ids[::-1]))
    assert got.value.tolist() == list(map(float, range(n)))[::-1]
    assert len(store) == 0


def test_a_full_store_evicts_only_what_it_must() -> None:
    store = PendingStore(1000)
    ids = [f"i{j}" for j in range(1000)]
    _add(store, ids, 1.0, [0.0] * 1000)
    store.take(id_hashes("m", ids[500:800]))  # joined in the middle: room for 300
    _add(store, [f"n{j}" for j in range(300)], 2.0, [0.0] * 300)
    assert store.evicted_full == 0 and len(store) == 1000
    _add(store, [f"o{j}" for j in range(10)], 3.0, [0.0] * 10)
    assert store.evicted_full == 10 and len(store) == 1000
    got = store.take(id_hashes("m", ids[:20]))
    assert np.flatnonzero(got.kind != KIND_DEAD).tolist() == list(range(10, 20))
    assert store.nbytes() / 1000 <= 100


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 40),
    st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=60),
)
def test_a_bounded_store_keeps_the_newest(cap: int, script: list[tuple[bool, int]]) -> None:
    """Fresh ids added and random waiting ones taken: the store holds exactly the newest
    `cap` of those still waiting, as an insertion-ordered dict that drops its oldest."""
    store = PendingStore(cap)
    ref: dict[str, float] = {}
    fresh = 0
    rng = np.random.default_rng(len(script))
    for is_add, n in script:
        if is_add:
            ids = [f"f{fresh + j}" for j in range(n)]
            fresh += n
            if ids:
                _add(store, ids, 1.0, [float(fresh)] * n)
            for i in ids:
                ref[i] = float(fresh)
            while len(ref) > cap:
                del ref[next(iter(ref))]
        else:
            pool = [f"f{j}" for j in range(fresh)]
            ids = list(rng.choice(pool, min(n, len(pool)), replace=False)) if pool else []
            if ids:
                got = store.take(id_hashes("m", ids))
                for k, i in enumerate(ids):
                    assert (got.kind[k] != KIND_DEAD) == (i in ref), i
                    ref.pop(i, None)
        assert len(store) == len(ref)
