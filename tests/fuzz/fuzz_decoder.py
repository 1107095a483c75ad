"""Coverage-guided fuzzing of the event decoder and the socket line framer with atheris.

Run for a fixed time (libFuzzer flags pass through):

    python tests/fuzz/fuzz_decoder.py -max_total_time=60

Each input is split at its first byte into a read size and a stream; the stream is framed
as the socket reader would frame it, read by read, and every framed line is decoded. A crash
is any exception escaping, or framing that differs from framing the stream in one read.
"""

from __future__ import annotations

import sys

try:
    import atheris
except ImportError:
    sys.exit(
        "atheris is not installed: `pip install atheris` (Linux, CPython 3.8-3.11), "
        "then run this file again"
    )

with atheris.instrument_imports():
    from sidecar.config import Config, SocketSettings
    from sidecar.events import REASONS, decode_lines
    from sidecar.health import Health
    from sidecar.ingest import EventProtocol, IngestServer
    from sidecar.pipeline import Pipeline

MAX_LINE = 512
MAX_BATCH = 16


def frame(chunks: list[bytes]) -> tuple[list[bytes], int]:
    cfg = Config(socket=SocketSettings(path="unused.sock", max_line_bytes=MAX_LINE))
    health = Health()
    server = IngestServer(cfg, Pipeline(cfg, health), health)
    proto = EventProtocol(server)
    for c in chunks:
        proto.data_received(c)
    proto.connection_lost(None)
    lines: list[bytes] = []
    while len(server.queue):
        lines.extend(server.queue.take())
    return lines, health.rejected["line_too_long"]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    step, stream = data[0] + 1, data[1:]
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
    lines, too_long = frame(chunks)
    if (lines, too_long) != frame([stream]):
        raise AssertionError("framing depends on how the stream is cut into reads")
    out = decode_lines(lines, MAX_BATCH)
    unknown = {r.reason for r in out.rejections} - set(REASONS)
    if unknown:
        raise AssertionError(f"rejection reasons outside REASONS: {unknown}")


def main() -> None:
    import structlog

    # Rejections log a warning each; keep the fuzzer's output to its own lines.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
