"""The processor's steps: while lines keep arriving it waits a few loop turns so that one
step takes many reads' worth of lines; a quiet stream, a full queue or an endless one never
make it wait for more than it has. And the framer's two ways of cutting a read into lines
agree with bytes.split (tests/test_fuzz_decoder.py checks the framing as a whole)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config import Config, ModelSpec, SocketSettings
from sidecar.health import Health
from sidecar.ingest import _CHUNK_BYTES, EventProtocol, IngestServer, split_lines
from sidecar.pipeline import Pipeline


class _CountingServer(IngestServer):
    """A real IngestServer that records how many events each processor step accepted."""

    def __init__(self, config: Config) -> None:
        health = Health()
        super().__init__(config, Pipeline(config, health), health)
        self.steps: list[int] = []

    def process_pending(self) -> int:
        accepted = super().process_pending()
        self.steps.append(accepted)
        return accepted


def _config(queue_max_bytes: int = 64 << 20) -> Config:
    return Config(
        socket=SocketSettings(path="unused.sock", queue_max_bytes=queue_max_bytes),
        models=[ModelSpec(name="m")],
    )


def _line(n_events: int) -> bytes:
    return (json.dumps([{"model": "m", "latency_s": 0.01}] * n_events) + "\n").encode()


def _feeder(proto: EventProtocol, data: list[bytes]) -> Callable[[], None]:
    """A reader that brings one piece of `data` per loop turn, as a busy socket does."""
    loop = asyncio.get_running_loop()
    pieces = iter(data)

    def turn() -> None:
        piece = next(pieces, None)
        if piece is not None:
            proto.data_received(piece)
            loop.call_soon(turn)

    return turn


async def _until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0)


def _accepted(server: IngestServer) -> int:
    return server.pipeline.trackers["m"].accepted


async def _run(server: _CountingServer, data: list[bytes], want: int) -> None:
    proto = EventProtocol(server)
    processor = asyncio.ensure_future(server.process_forever())
    try:
        asyncio.get_running_loop().call_soon(_feeder(proto, data))
        await _until(lambda: _accepted(server) == want)
    finally:
        processor.cancel()
        await asyncio.gather(processor, return_exceptions=True)


def test_lines_arriving_on_consecutive_turns_are_one_step() -> None:
    server = _CountingServer(_config())
    data = [_line(10) for _ in range(10)]
    asyncio.run(_run(server, data, 100))
    assert server.steps == [100]
    assert server.health.received["socket"] == 100


def test_a_quiet_stream_is_processed_without_waiting_for_more() -> None:
    server = _CountingServer(_config())
    asyncio.run(_run(server, [_line(3)], 3))  # nothing else ever arrives
    assert server.steps == [3]


def test_an_endless_stream_is_processed_in_steps_of_about_a_chunk() -> None:
    """Lines that never stop arriving end each wait at the chunk (or the turn limit)."""
    line = _line(1000)
    n_lines = 4 * _CHUNK_BYTES // len(line)
    server = _CountingServer(_config())
    asyncio.run(_run(server, [line] * n_lines, 1000 * n_lines))
    lines_per_step = [n // 1000 for n in server.steps]
    assert len(lines_per_step) >= 4
    assert sum(lines_per_step) == n_lines
    # a step takes what arrived until the chunk was reached, and one turn's read at most
    assert max(lines_per_step) <= _CHUNK_BYTES // len(line) + 2


def test_a_full_queue_is_processed_at_once() -> None:
    """Readers pause on a full queue, so no more lines can come: the step starts."""
    server = _CountingServer(_config(queue_max_bytes=1))
    data = [_line(2) for _ in range(5)]
    asyncio.run(_run(server, data, 10))
    assert server.steps == [2] * 5


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    st.booleans(),
    st.integers(0, 50),
)
def test_split_lines_equals_bytes_split(
    pieces: list[bytes], trailing: bool, long_line: int
) -> None:
    """Both ways of cutting (one split, or a find per line) give what bytes.split gives."""
    data = b"\n".join(pieces) + (b"\n" if trailing else b"")
    want = data.split(b"\n")
    tail = want.pop()
    assert split_lines(data, long_line) == (want, tail)
    assert split_lines(data) == (want, tail)
