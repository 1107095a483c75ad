"""Baselines: reference statistics, parquet round trip, bad files, reservoir sampling."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sidecar.baseline import load_baseline, write_baseline
from sidecar.baseline_build import build_baseline_file
from sidecar.baseline_meta import METADATA_KEY
from sidecar.errors import BaselineError
from sidecar.stats.bins import OTHER
from sidecar.stats.reference import (
    CategoricalReference,
    NumericReference,
    build_baseline,
    category_key,
    numeric_reference,
)


def columns(rng: np.random.Generator, rows: int) -> dict[str, object]:
    amount = rng.lognormal(size=rows)
    amount[::17] = np.nan
    count = rng.integers(0, 4, size=rows).astype(float)
    country = list(rng.choice(["de", "fr", "us", "jp"], size=rows, p=[0.5, 0.3, 0.15, 0.05]))
    country[::23] = [None] * len(country[::23])
    return {
        "numeric": {"amount": amount, "count": count},
        "categorical": {"country": country},
        "prediction": rng.normal(loc=1.0, size=rows),
    }


def test_numeric_reference_bins() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=1000), [np.nan, np.inf, -np.inf]])
    ref = numeric_reference("x", values, psi_bins=10)
    assert ref.count == 1000 and ref.missing_rate == pytest.approx(3 / 1003)
    assert np.all(np.diff(ref.sorted_values) >= 0)
    assert ref.edges.shape == (9,) and np.all(np.diff(ref.edges) > 0)
    np.testing.assert_allclose(ref.shares, 0.1)
    finite = values[np.isfinite(values)]
    want = np.quantile(finite, np.arange(1, 10) / 10, method="inverted_cdf")
    np.testing.assert_array_equal(ref.edges, want)
    # bin i holds (edge[i-1], edge[i]]; outer bins are open-ended
    assert ref.bin_index(np.array([ref.edges[0]]))[0] == 0
    assert ref.bin_index(np.array([-1e300, 1e300])).tolist() == [0, 9]
    assert ref.bin_counts(np.array([1e9, -1e9, np.nan, np.inf])).sum() == 2
    assert ref.upper_bounds[-1] == np.inf


def test_discrete_reference_has_deduplicated_edges() -> None:
    ref = numeric_reference("flag", np.array([0.0] * 90 + [1.0] * 10), psi_bins=10)
    assert ref.edges.tolist() == [0.0]
    assert ref.shares.tolist() == pytest.approx([0.9, 0.1])
    assert ref.shares.sum() == pytest.approx(1.0)


def test_categorical_reference_caps_and_codes() -> None:
    values = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] + [None] * 2
    b = build_baseline(
        "m",
        numeric={},
        categorical={"k": values},
        prediction=None,
        prediction_kind=None,
        max_categories=2,
    )
    ref = b.categorical[0]
    assert ref.categories == ("a", "b")
    assert ref.shares.tolist() == pytest.approx([5 / 11, 3 / 11, 3 / 11])
    assert ref.bin_labels == ("a", "b", OTHER)
    assert ref.missing_rate == pytest.approx(2 / 13)
    assert ref.codes(["a", "b", "c", None, "zz"]).tolist() == [0, 1, 2, -1, 2]
    assert ref.codes(["a"]).dtype == np.int32


def test_category_key_spells_values_like_json() -> None:
    assert [category_key(v) for v in (True, 3, 3.0, 2.5, "x", None, float("nan"))] == [
        "true",
        "3",
        "3",
        "2.5",
        "x",
        None,
        None,
    ]


def test_round_trip_through_parquet_uses_stored_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    cols = columns(rng, 3000)
    path = tmp_path / "b.parquet"
    written = write_baseline(path, "fraud", prediction_kind="numeric", **cols)  # type: ignore[arg-type]
    assert written.source == "file" and written.path == str(path)
    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".*tmp"))

    loaded = load_baseline(
        path,
        "fraud",
        numeric_names=["amount", "count"],
        categorical_names=["country"],
        prediction_kind="numeric",
    )
    assert loaded.stats_source == "stored" and loaded.source == "file"
    assert loaded.sha256 == written.sha256 and loaded.rows == 3000
    for a, b in zip(written.numeric, loaded.numeric, strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.sorted_values, b.sorted_values)
        np.testing.assert_array_equal(a.edges, b.edges)
        np.testing.assert_array_equal(a.shares, b.shares)
        assert a.missing_rate == b.missing_rate and a.mean == b.mean
    ca, cb = written.categorical[0], loaded.categorical[0]
    assert ca.categories == cb.categories and ca.missing_rate == cb.missing_rate
    np.testing.assert_array_equal(ca.shares, cb.shares)
    # the two-sample tests need the baseline's counts, not only its shares
    np.testing.assert_array_equal(ca.counts, cb.counts)
    country = [c for c in cols["categorical"]["country"] if c is not None]  # type: ignore[index]
    assert cb.counts.tolist() == [country.count(c) for c in cb.categories] + [0]
    assert isinstance(loaded.prediction, NumericReference)
    assert written.prediction is not None
    np.testing.assert_array_equal(loaded.prediction.sorted_values, written.prediction.sorted_values)

    # the statistics are JSON in the schema metadata, not a pickle
    meta = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    assert meta["format"] == 1 and meta["psi_bins"] == 10
    assert set(meta["numeric"]) == {"amount", "count"}

    # other settings than stored: statistics computed from the columns, same result
    recomputed = load_baseline(
        path,
        "fraud",
        numeric_names=["amount"],
        categorical_names=["country"],
        prediction_kind="numeric",
        psi_bins=10,
        max_categories=3,
    )
    assert recomputed.stats_source == "mixed"
    assert recomputed.categorical[0].categories == ("de", "fr", "us")
    assert recomputed.categorical[0].tail == ("jp",)  # counted for the tests, not a label
    assert not recomputed.categorical[0].overflowed
    five = load_baseline(
        path,
        "fraud",
        numeric_names=["amount"],
        categorical_names=[],
        prediction_kind=None,
        psi_bins=5,
    )
    assert five.stats_source == "computed" and five.numeric[0].shares.shape == (5,)
    assert five.prediction is None


def test_captured_baseline_stays_captured_after_reload(tmp_path: Path) -> None:
    path = tmp_path / "state" / "captured.parquet"
    written = write_baseline(
        path,
        "m",
        numeric={"x": np.arange(600.0)},
        categorical={},
        prediction=None,
        prediction_kind=None,
        source="capture",
    )
    loaded = load_baseline(
        path, "m", numeric_names=["x"], categorical_names=[], prediction_kind=None
    )
    assert written.source == loaded.source == "capture"
    assert loaded.sha256 == written.sha256 != ""


def test_file_without_stored_statistics_is_computed(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "plain.parquet"
    pq.write_table(
        pa.table(
            {
                "x": rng.normal(size=500),
                "n": pa.array(rng.integers(0, 9, size=500), pa.int32()),
                "k": pa.array(rng.integers(0, 3, size=500)),
                "prediction": pa.array(["yes", "no"] * 250),
            }
        ),
        path,
    )
    b = load_baseline(
        path,
        "m",
        numeric_names=["x", "n"],
        categorical_names=["k"],
        prediction_kind="categorical",
    )
    assert b.stats_source == "computed"
    assert b.numeric[1].count == 500
    assert set(b.categorical[0].categories) == {"0", "1", "2"}
    assert isinstance(b.prediction, CategoricalReference)
    assert set(b.prediction.categories) == {"yes", "no"}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "not found"),
        ("garbage", "not a readable parquet"),
        ("no_column", "'country'"),
        ("strings", "'amount'"),
    ],
)
def test_bad_baseline_files_name_file_and_column(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "bad.parquet"
    if setup == "garbage":
        path.write_bytes(b"PAR1 this is not parquet")
    elif setup == "no_column":
        pq.write_table(pa.table({"amount": [1.0, 2.0]}), path)
    elif setup == "strings":
        pq.write_table(pa.table({"amount": ["1.0", "abc"], "country": ["de", "fr"]}), path)
    with pytest.raises(BaselineError, match=message) as err:
        load_baseline(
            path,
            "m",
            numeric_names=["amount"],
            categorical_names=["country"],
            prediction_kind=None,
        )
    assert str(path) in str(err.value)


def test_unreadable_path(tmp_path: Path) -> None:
    # a directory where the file should be: unreadable whatever the user's privileges
    path = tmp_path / "dir.parquet"
    path.mkdir()
    with pytest.raises(BaselineError, match="cannot be read") as err:
        load_baseline(
            path, "m", numeric_names=["amount"], categorical_names=[], prediction_kind=None
        )
    assert str(path) in str(err.value)


def training_table(rng: np.random.Generator, rows: int) -> pa.Table:
    return pa.table(
        {
            "row": np.arange(rows),
            "amount": rng.normal(size=rows),
            "country": rng.choice(["de", "fr", "us"], size=rows),
            "prediction": rng.normal(size=rows),
            "unused": np.zeros(rows),
        }
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_reservoir_sampling_builds_a_baseline(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(3)
    rows = 200_000
    table = training_table(rng, rows)
    src = tmp_path / f"train.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, src, row_group_size=30_000)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, src)
    out = tmp_path / "baseline.parquet"
    kwargs = {
        "numeric_names": ["row", "amount"],
        "categorical_names": ["country"],
        "prediction_kind": "numeric",
        "sample": 5000,
        "seed": 7,
    }
    b, summary = build_baseline_file(src, out, "m", **kwargs)  # type: ignore[arg-type]
    assert b.rows == 5000 and out.exists()
    sampled = b.numeric[0].sorted_values
    assert sampled.shape == (5000,) and np.unique(sampled).shape == (5000,)
    # uniform over the whole file: sampled row numbers spread like U(0, rows)
    assert abs(sampled.mean() / rows - 0.5) < 0.02
    assert (sampled < rows / 10).mean() == pytest.approx(0.1, abs=0.02)
    # kept in file order
    assert np.all(np.diff(pq.read_table(out).column("row").to_numpy()) > 0)
    # reproducible with the seed, different with another
    again, _ = build_baseline_file(src, tmp_path / "again.parquet", "m", **kwargs)  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.numeric[0].sorted_values, sampled)
    other, _ = build_baseline_file(
        src,
        tmp_path / "other.parquet",
        "m",
        **{**kwargs, "seed": 8},  # type: ignore[arg-type]
    )
    assert not np.array_equal(other.numeric[0].sorted_values, sampled)

    by_name = {s["name"]: s for s in summary}
    assert set(by_name) == {"row", "amount", "country", "prediction"}
    assert by_name["amount"]["type"] == "numeric" and by_name["amount"]["rows"] == 5000
    assert by_name["amount"]["source_rows"] == rows
    assert by_name["country"]["categories"] == 3
    assert by_name["prediction"]["role"] == "prediction"
    loaded = load_baseline(
        out,
        "m",
        numeric_names=["row", "amount"],
        categorical_names=["country"],
        prediction_kind="numeric",
    )
    assert loaded.stats_source == "stored" and loaded.sha256 == b.sha256


def test_small_source_keeps_every_row(tmp_path: Path) -> None:
    src = tmp_path / "small.csv"
    src.write_text("amount,country\n1.5,de\n,fr\n2.5,\n")
    b, _ = build_baseline_file(
        src,
        tmp_path / "b.parquet",
        "m",
        numeric_names=["amount"],
        categorical_names=["country"],
        prediction_kind=None,
        sample=10,
    )
    assert b.rows == 3
    assert b.numeric[0].sorted_values.tolist() == [1.5, 2.5]
    assert b.categorical[0].missing_rate == pytest.approx(1 / 3)


def test_csv_with_text_in_a_numeric_column_names_it(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("country,amount\nde,1.0\nfr,abc\n")
    with pytest.raises(BaselineError, match="'amount'") as err:
        build_baseline_file(
            src,
            tmp_path / "b.parquet",
            "m",
            numeric_names=["amount"],
            categorical_names=["country"],
            prediction_kind=None,
        )
    assert str(src) in str(err.value)
    with pytest.raises(BaselineError, match="'missing'"):
        build_baseline_file(
            src,
            tmp_path / "b.parquet",
            "m",
            numeric_names=["missing"],
            categorical_names=[],
            prediction_kind=None,
        )


def test_files_without_stored_counts_still_load_with_counts(tmp_path: Path) -> None:
    """Baselines written before category counts were stored have shares only: they load,
    and their categorical statistics are computed from the column again."""
    rng = np.random.default_rng(4)
    cols = columns(rng, 800)
    path = tmp_path / "old.parquet"
    write_baseline(path, "fraud", prediction_kind="numeric", **cols)  # type: ignore[arg-type]
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    for entry in meta["categorical"].values():
        del entry["counts"]
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)}), path)
    b = load_baseline(
        path,
        "fraud",
        numeric_names=["amount", "count"],
        categorical_names=["country"],
        prediction_kind="numeric",
    )
    assert b.stats_source == "mixed"  # numeric statistics stored, categorical computed
    ref = b.categorical[0]
    country = [c for c in cols["categorical"]["country"] if c is not None]  # type: ignore[index]
    assert ref.counts.tolist() == [country.count(c) for c in ref.categories] + [0]
    # counts that disagree with the shares are not trusted either
    meta["categorical"]["country"]["counts"] = [1, 1, 1, 1, 0]
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)}), path)
    again = load_baseline(
        path,
        "fraud",
        numeric_names=["amount", "count"],
        categorical_names=["country"],
        prediction_kind="numeric",
    )
    assert again.stats_source == "mixed"
    assert again.categorical[0].counts.tolist() == ref.counts.tolist()
