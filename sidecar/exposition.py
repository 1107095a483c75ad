"""/metrics rendered from cached label text: only the numbers are formatted at each scrape.

prometheus_client formats every sample from its name and label dict at every scrape, about
4 µs a sample for the text format and 8 µs for OpenMetrics; at 1,000 features a scrape holds
about 50,000 samples. The large families (per-feature histograms, per-bin counters, drift
gauges) are `CachedFamily` objects instead: their lines come in `Lines` whose text up to
the value is built once per tracker or baseline, and a scrape formats only the values, in
bulk. Constant blocks (a baseline's reference shares and bin edges, a drift result's
gauges) keep their rendered text. Everything else, and content negotiation, stays with
prometheus_client.

A `CachedFamily` is a prometheus_client `Metric` whose `samples` are built on demand, so
`generate_latest`, `registry.get_sample_value` and `name[]` filtering see the very samples
that are rendered; tests/test_exposition.py checks that both formats parse, with
prometheus_client's parsers, to exactly what prometheus_client's own encoders give.

`render_chunks` produces the body in pieces of at most about `PIECE_LINES` lines and lets
the event loop run between them once `YIELD_AFTER_S` has passed, so a large scrape never
holds the loop for long, without a thread (whose pure-Python work would hold the GIL
anyway). It hands back chunks of about `CHUNK_BYTES`, which the server writes one at a
time: a 4 MiB body is never joined or copied to the socket in one go.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, compress, islice, repeat
from typing import Any

import numpy as np
from prometheus_client import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Labels = dict[str, str]
Keys = Callable[[], Iterable[tuple[str, Labels]]]

PIECE_LINES = 2_000
"""Lines formatted in one go: about 0.6 ms on a quiet core."""
BUILD_LINES = 200
"""Lines whose text is built in one go (escaping and sorting labels: about 10 µs a line)."""
YIELD_AFTER_S = 0.001
"""The event loop gets a turn at least this often during a scrape."""
CHUNK_BYTES = 1 << 18
"""Bytes of body written to the socket in one go (about 60 µs to copy)."""
OPENMETRICS_EOF = "# EOF\n"
# choose_encoder's escaping schemes under which valid legacy names are written unchanged
_PLAIN_ESCAPINGS = (None, "underscores", "allow-utf-8", "values")


def escape_label_value(v: str) -> str:
    """A label value as both formats write it: backslash, newline and quote escaped."""
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def labels_text(labels: Mapping[str, str]) -> str:
    """`{a="x",b="y"}` with names sorted, as prometheus_client writes them; "" for none."""
    if not labels:
        return ""
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def go_floats(values: np.ndarray) -> list[str]:
    """`floatToGoString` of each value, in bulk: repr, fixed where Go's form differs."""
    v = np.asarray(values, dtype=np.float64)
    out = list(map(float.__repr__, v.tolist()))
    # floatToGoString differs from repr for ±inf and NaN, and writes 1e6 <= x < 1e16 in
    # exponent form (repr switches to it only at 1e16)
    with np.errstate(invalid="ignore"):
        odd = np.flatnonzero(~np.isfinite(v) | ((v >= 1e6) & (v < 1e16)))
    for i in odd.tolist():
        out[i] = floatToGoString(v[i])  # type: ignore[no-untyped-call]
    return out


class Lines:
    """Sample lines whose names and labels stay fixed for a while (a tracker's features, a
    baseline's bins): the text of each line up to its value, built on first use.

    `keys` rebuilds the (name, labels) pairs when samples are asked for; it must not hold
    the tracker it describes (the collector's caches are keyed by it, weakly).
    """

    __slots__ = ("_keys", "_prefixes", "names")

    def __init__(self, keys: Keys, names: Iterable[str]) -> None:
        self._keys = keys
        self.names = frozenset(names)
        """Every sample name among the lines (for `name[]` filtering)."""
        self._prefixes: list[str] | None = None

    def keys(self) -> list[tuple[str, Labels]]:
        return list(self._keys())

    def build(self) -> Iterator[None]:
        """Build the prefixes, a piece at a time (the renderer yields between pieces)."""
        if self._prefixes is not None:
            return
        out: list[str] = []
        keys = iter(self._keys())
        while step := [f"{n}{labels_text(lab)} " for n, lab in islice(keys, BUILD_LINES)]:
            out += step
            yield
        self._prefixes = out

    @property
    def prefixes(self) -> list[str]:
        for _ in self.build():
            pass
        assert self._prefixes is not None
        return self._prefixes


class Block:
    """Some lines of a family in order: cached `lines`, one value each; `keep` (a mask over
    the lines) leaves some out. A block kept between scrapes keeps its rendered text."""

    __slots__ = ("_text", "keep", "lines", "values")

    def __init__(self, lines: Lines, values: np.ndarray, keep: np.ndarray | None = None) -> None:
        self.lines = lines
        self.values = np.asarray(values, dtype=np.float64)
        self.keep = None if keep is None or bool(np.all(keep)) else np.asarray(keep, dtype=bool)
        self._text: list[str] | None = None

    @property
    def names(self) -> frozenset[str]:
        return self.lines.names

    def samples(self) -> list[Sample]:
        keys = self.lines.keys()
        values = self.values.tolist()
        if len(keys) != len(values):
            raise ValueError(f"{len(values)} values for {len(keys)} lines")
        pairs: Iterable[tuple[tuple[str, Labels], float]] = zip(keys, values, strict=True)
        if self.keep is not None:
            pairs = compress(pairs, self.keep.tolist())
        return [Sample(name, labels, value) for (name, labels), value in pairs]

    def pieces(self) -> Iterator[str]:
        """The block's text, in pieces of at most PIECE_LINES lines."""
        if self._text is not None:
            yield from self._text
            return
        for _ in self.lines.build():
            yield ""
        prefixes = self.lines.prefixes
        values = self.values
        if values.shape[0] != len(prefixes):
            raise ValueError(f"{values.shape[0]} values for {len(prefixes)} lines")
        if self.keep is not None:
            prefixes = list(compress(prefixes, self.keep.tolist()))
            values = values[self.keep]
        text: list[str] = []
        for start in range(0, len(prefixes), PIECE_LINES):
            stop = start + PIECE_LINES
            piece = "".join(
                chain.from_iterable(
                    zip(prefixes[start:stop], go_floats(values[start:stop]), repeat("\n"))
                )
            )
            text.append(piece)
            yield piece
        self._text = text


class SampleBlock:
    """Plain samples among cached blocks (the few categorical bins, say), in order."""

    __slots__ = ("_samples",)

    def __init__(self, samples: list[Sample]) -> None:
        self._samples = samples

    @property
    def names(self) -> frozenset[str]:
        return frozenset(s.name for s in self._samples)

    def samples(self) -> list[Sample]:
        return list(self._samples)

    def pieces(self) -> Iterator[str]:
        for start in range(0, len(self._samples), PIECE_LINES):
            part = self._samples[start : start + PIECE_LINES]
            values = go_floats(np.array([s.value for s in part], dtype=np.float64))
            yield "".join(
                f"{s.name}{labels_text(s.labels)} {v}\n" for s, v in zip(part, values, strict=True)
            )


AnyBlock = Block | SampleBlock


class CachedFamily(Metric):
    """A metric family rendered from blocks; its `samples` are built when asked for."""

    def __init__(self, name: str, documentation: str, typ: str) -> None:
        super().__init__(name, documentation, typ)
        self.blocks: list[AnyBlock] = []

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.blocks for s in b.samples()]

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        # Metric.__init__ sets an empty list; samples are added as blocks
        if value:
            raise TypeError("add samples to a CachedFamily as blocks")

    def add(self, block: AnyBlock) -> None:
        self.blocks.append(block)

    def add_samples(self, samples: list[Sample]) -> None:
        if samples:
            self.blocks.append(SampleBlock(samples))

    def header(self, openmetrics: bool) -> str:
        """HELP and TYPE lines as prometheus_client writes them in either format."""
        name, typ, doc = self.name, self.type, self.documentation
        if openmetrics:
            doc = escape_label_value(doc)
            unit = f"# UNIT {name} {self.unit}\n" if self.unit else ""
            return f"# HELP {name} {doc}\n# TYPE {name} {typ}\n{unit}"
        doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        text_name, text_type = {
            "counter": (name + "_total", "counter"),
            "info": (name + "_info", "gauge"),
            "stateset": (name, "gauge"),
            "gaugehistogram": (name, "histogram"),
            "unknown": (name, "untyped"),
        }.get(typ, (name, typ))
        return f"# HELP {text_name} {doc}\n# TYPE {text_name} {text_type}\n"

    def pieces(self, openmetrics: bool) -> Iterator[str]:
        yield self.header(openmetrics)
        for b in self.blocks:
            yield from b.pieces()

    def restricted(self, names: set[str]) -> Metric | None:
        """The family cut down to the samples named, or None when none is."""
        if not any(b.names & names for b in self.blocks):
            return None
        if all(b.names <= names for b in self.blocks):
            return self
        m = Metric(self.name, self.documentation, self.type, self.unit)
        m.samples = [s for s in self.samples if s.name in names]
        return m if m.samples else None  # a block's `keep` may have left out every one


def restrict(families: Iterable[Metric], names: set[str]) -> list[Metric]:
    """The families cut down to the samples named (`_total`, `_bucket`... included)."""
    out: list[Metric] = []
    for family in families:
        if isinstance(family, CachedFamily):
            cut = family.restricted(names)
            if cut is not None:
                out.append(cut)
            continue
        samples = [s for s in family.samples if s.name in names]
        if samples:
            m = Metric(family.name, family.documentation, family.type, family.unit)
            m.samples = samples
            out.append(m)
    return out


class _Collected:
    """Already collected metric families, in the shape the encoders read."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


Encoder = Callable[[Any], bytes]


def _escaping(encoder: Encoder) -> str | None:
    keywords = getattr(encoder, "keywords", None)
    if isinstance(encoder, functools.partial) and isinstance(keywords, dict):
        value = keywords.get("escaping")
        return None if value is None else str(value)
    return None


def pieces(families: Sequence[Metric], encoder: Encoder, openmetrics: bool) -> Iterator[bytes]:
    """The exposition of `families` in pieces: cached families rendered here, runs of
    other families by prometheus_client's `encoder` (as `choose_encoder` picked it)."""
    fast = _escaping(encoder) in _PLAIN_ESCAPINGS
    run: list[Metric] = []

    def flush() -> Iterator[bytes]:
        if run:
            body = encoder(_Collected(run))
            if openmetrics and body.endswith(OPENMETRICS_EOF.encode()):
                body = body[: -len(OPENMETRICS_EOF)]
            run.clear()
            yield body

    for family in families:
        if fast and isinstance(family, CachedFamily):
            yield from flush()
            for piece in family.pieces(openmetrics):
                yield piece.encode()
        else:
            run.append(family)
    yield from flush()
    if openmetrics:
        yield OPENMETRICS_EOF.encode()


async def render_chunks(
    families: Sequence[Metric], encoder: Encoder, openmetrics: bool
) -> list[bytes]:
    """The body as chunks of about CHUNK_BYTES, letting the event loop run every
    YIELD_AFTER_S. Never joined into one buffer: the server writes the chunks one at a
    time, so no single copy of a large body holds the loop (about 1 ms per 4 MiB)."""
    chunks: list[bytes] = []
    run: list[bytes] = []
    size = 0
    turn = time.perf_counter()
    for piece in pieces(families, encoder, openmetrics):
        if piece:
            run.append(piece)
            size += len(piece)
            if size >= CHUNK_BYTES:
                chunks.append(b"".join(run))
                run.clear()
                size = 0
        if time.perf_counter() - turn > YIELD_AFTER_S:
            await asyncio.sleep(0)
            turn = time.perf_counter()
    if run:
        chunks.append(b"".join(run))
    return chunks


async def render(families: Sequence[Metric], encoder: Encoder, openmetrics: bool) -> bytes:
    """The whole body, letting the event loop run every YIELD_AFTER_S."""
    return b"".join(await render_chunks(families, encoder, openmetrics))


def render_now(families: Sequence[Metric], encoder: Encoder, openmetrics: bool) -> bytes:
    """`render` without yielding (tests, tools)."""
    return b"".join(pieces(families, encoder, openmetrics))
