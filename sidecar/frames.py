"""Columnar frames: an Arrow IPC stream on the event socket (or a `POST /v1/events` body).

A connection whose first four bytes are `FF FF FF FF` (the IPC continuation marker)
carries one Arrow IPC stream: a schema whose metadata names the `model` (and optionally
the `version`), then record batches whose rows are events. This module cuts the bytes
into IPC messages as they arrive, and reads the schema and each record batch (zero-copy
over the message's bytes). What a batch's rows mean, and which are rejected, is
`sidecar.frame_rows`; folding them into a model is `sidecar.frame_ingest`.

A stream that is not Arrow IPC, a message over `socket.max_frame_bytes`, a second schema,
or bytes after the end-of-stream marker close that connection and are counted in
`drift_sidecar_frame_errors_total{reason}`; so is a connection that ends inside a
message (`truncated`: that one batch is lost, the batches before it were processed).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported by the functions that read a stream, not here: the daemon imports
# this module (for FRAME_ERRORS, MARKER), and stays light until a stream comes.

MARKER = b"\xff\xff\xff\xff"
"""The first four bytes of an Arrow IPC stream (and of each of its messages)."""
CONTENT_TYPE = "application/vnd.apache.arrow.stream"
"""The media type of an Arrow IPC stream, for `POST /v1/events`."""

FRAME_ERRORS = ("malformed", "too_large", "truncated", "schema_change", "refused")
"""Why a stream was cut short (`drift_sidecar_frame_errors_total{reason}`): bytes that are
not an Arrow IPC stream (or a batch that does not match its schema), a message over
`socket.max_frame_bytes`, a connection that ended inside a message, a second schema in
one stream, or frames switched off (`socket.arrow_enabled: false`)."""

FIELDS = (
    "features",
    "prediction",
    "probabilities",
    "confidence",
    "latency_s",
    "status",
    "trace_id",
    "id",
    "embedding",
    "ts",
)
"""The columns a frame may carry: protocol v1's event fields, less `model` and `version`
(schema metadata). When an event has several problems, the first of these decides its
reason, as the first bad field of a JSON object does."""

_PREFIX = 8  # continuation marker + int32 metadata length
_SCRATCH = 1 << 16  # bytes read at a time between messages (see FrameReader.get_buffer)
_EOS = MARKER + b"\x00\x00\x00\x00"


class FrameError(Exception):
    """The stream cannot be read further; `reason` is one of FRAME_ERRORS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(eq=False)
class Stream:
    """What a stream's schema says, shared by all of its batches."""

    schema: pa.Schema
    model: str | None
    version: str | None
    problem: tuple[str, str] | None = None
    """(reason, detail) that rejects every row of this stream (no `model`, say)."""
    plan: dict[str, int] = field(default_factory=dict)
    """Column index by field name."""
    read_schema: pa.Schema | None = None
    """The schema batches are read with: dictionary-encoded columns read as their indices
    (frames take no dictionaries: those cells reject their rows as `wrong_type`)."""
    encoded: frozenset[str] = frozenset()
    """Dictionary-encoded columns: `name`, or `features.NAME` for a feature."""


@dataclass(eq=False, slots=True)
class Frame:
    """One record batch of a stream, as queued for the processor."""

    stream: Stream
    batch: pa.RecordBatch
    nbytes: int


def _check_names(t: pa.DataType) -> None:
    """Read every nested field name: UnicodeDecodeError when one is not UTF-8."""
    fields = []
    if hasattr(t, "field"):  # struct, union
        fields = [t.field(i) for i in range(t.num_fields)]
    elif hasattr(t, "key_field"):  # map
        fields = [t.key_field, t.item_field]
    elif hasattr(t, "value_field"):  # the list types
        fields = [t.value_field]
    for f in fields:
        _ = f.name
        _check_names(f.type)


def stream_of(schema: pa.Schema) -> Stream:
    """The stream a schema opens; a schema that rejects every row says why in `problem`.
    UnicodeDecodeError when a field name is not UTF-8."""
    for f in schema:
        _check_names(f.type)
    meta = schema.metadata or {}
    model: str | None = None
    version: str | None = None
    problem: tuple[str, str] | None = None
    try:
        raw_model = meta.get(b"model")
        model = raw_model.decode() if raw_model is not None else None
        raw_version = meta.get(b"version")
        version = raw_version.decode() if raw_version is not None else None
    except UnicodeDecodeError:
        problem = ("invalid_value", "schema metadata `model` or `version` is not UTF-8")
    if model is None and problem is None:
        problem = ("missing_field", "schema metadata has no `model`")
    plan: dict[str, int] = {}
    for i, f in enumerate(schema):
        if f.name not in FIELDS:
            problem = problem or (
                "invalid_value",
                f"column {f.name[:100]!r} is not an event field that frames carry "
                f"({', '.join(FIELDS)})",
            )
        elif f.name in plan:
            problem = problem or ("invalid_value", f"column {f.name!r} appears twice")
        else:
            plan[f.name] = i
    import pyarrow as pa  # noqa: PLC0415 (see the imports)

    encoded: set[str] = set()
    fields = []
    for f in schema:
        plain = _plain(f.type)
        t = f.type if plain is None else plain
        if plain is not None:
            if pa.types.is_dictionary(f.type):
                encoded.add(f.name)
            elif f.name == "features" and pa.types.is_struct(f.type):
                encoded.update(
                    f"features.{c.name}" for c in f.type if pa.types.is_dictionary(c.type)
                )
            if not any(e == f.name or e.startswith(f"{f.name}.") for e in encoded):
                problem = problem or ("wrong_type", f"column {f.name[:100]!r}: dictionary-encoded")
        fields.append(pa.field(f.name, t, f.nullable))
    read = pa.schema(fields, metadata=schema.metadata) if encoded or problem else schema
    return Stream(schema, model, version, problem, plan, read, frozenset(encoded))


def _plain(t: pa.DataType) -> pa.DataType | None:
    """`t` with every dictionary type replaced by its index type; None when it has none."""
    import pyarrow as pa  # noqa: PLC0415

    if pa.types.is_dictionary(t):
        return t.index_type
    if pa.types.is_struct(t):
        kids = [t.field(i) for i in range(t.num_fields)]
        plain = [_plain(k.type) for k in kids]
        if all(p is None for p in plain):
            return None
        return pa.struct(
            [
                pa.field(k.name, k.type if p is None else p, k.nullable)
                for p, k in zip(plain, kids, strict=True)
            ]
        )
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        v = _plain(t.value_type)
        if v is None:
            return None
        if pa.types.is_fixed_size_list(t):
            return pa.list_(v, t.list_size)
        return pa.large_list(v) if pa.types.is_large_list(t) else pa.list_(v)
    if pa.types.is_map(t):
        k, i = _plain(t.key_type), _plain(t.item_type)
        if k is None and i is None:
            return None
        return pa.map_(t.key_type if k is None else k, t.item_type if i is None else i)
    return None


def message_length(buf: bytes | memoryview, pos: int, max_bytes: int) -> int | None:
    """The length of the IPC message at `buf[pos:]` (prefix, metadata and body), or None
    while too few bytes have arrived to tell. FrameError when it is not one."""
    if len(buf) - pos < _PREFIX:
        return None
    if buf[pos : pos + 4] != MARKER:
        raise FrameError("malformed", "an IPC message does not start with FF FF FF FF")
    meta_len = int(struct.unpack_from("<i", buf, pos + 4)[0])
    if meta_len == 0:
        return _PREFIX  # end of stream
    if meta_len < 0 or meta_len > max_bytes:
        raise FrameError(
            "malformed" if meta_len < 0 else "too_large",
            f"IPC metadata of {meta_len} bytes",
        )
    if len(buf) - pos < _PREFIX + meta_len:
        return None
    body = _body_length(buf, pos + _PREFIX, meta_len)
    total = _PREFIX + meta_len + body
    if total > max_bytes:
        raise FrameError(
            "too_large", f"IPC message of {total} bytes > socket.max_frame_bytes {max_bytes}"
        )
    return total


def _body_length(buf: bytes | memoryview, start: int, size: int) -> int:
    """`Message.bodyLength` from the message's flatbuffer, bounds-checked (pyarrow verifies
    the whole flatbuffer later; this only needs to know how many bytes to wait for)."""
    end = start + size

    def read(fmt: str, pos: int) -> int:
        n = struct.calcsize(fmt)
        if pos < start or pos + n > end:
            raise FrameError("malformed", "IPC message metadata out of bounds")
        return int(struct.unpack_from(fmt, buf, pos)[0])

    table = start + read("<I", start)
    vtable = table - read("<i", table)
    vt_size = read("<H", vtable)
    slot = 4 + 2 * 3  # field 3 of Message: bodyLength (version, header_type, header, ...)
    if vt_size <= slot + 1:
        return 0
    off = read("<H", vtable + slot)
    if off == 0:
        return 0
    body = read("<q", table + off)
    if body < 0:
        raise FrameError("malformed", f"IPC body length {body}")
    return body


class FrameReader:
    """Cuts a stream's bytes into messages and reads them; one per connection or body."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.stream: Stream | None = None
        self.ended = False
        # The bytes not read yet, as received: joined only when a message spans reads, and
        # then once; messages are sliced out of them without a copy (pyarrow keeps the
        # slice, and so the bytes, alive for as long as a batch uses them).
        self._parts: list[bytes | memoryview] = []
        self._have = 0
        self._need = 0  # bytes the message at the head needs, once known
        self._scratch: memoryview | None = None  # buffered reading (get_buffer) only
        self._fill = 0
        self._big: memoryview | None = None
        self._big_have = 0

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole message."""
        return self._have + self._fill + (self._big_have if self._big is not None else 0)

    def _joined(self) -> bytes | memoryview:
        if len(self._parts) > 1:
            self._parts = [b"".join(self._parts)]
        return self._parts[0]

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[list[Frame], FrameError | None]:
        """The record batches completed by `data`, in order, and the error that stops the
        stream, if any (the batches before the bad message are still returned)."""
        if data:
            self._parts.append(data if isinstance(data, bytes) else bytes(data))
            self._have += len(data)
        parts = self._parts
        out: list[Frame] = []
        limit = self.max_message_bytes
        try:
            while self._have:
                if self._need == 0:
                    n = message_length(parts[0], 0, limit)
                    if n is None and len(parts) > 1:
                        n = message_length(self._joined(), 0, limit)
                        parts = self._parts
                    if n is None:
                        break
                    self._need = n
                need = self._need
                if self._have < need:
                    break
                head = parts[0] if len(parts[0]) >= need else self._joined()
                parts = self._parts
                view = memoryview(head)
                if len(view) > need:
                    parts[0] = view[need:]
                else:
                    parts.pop(0)
                self._have -= need
                self._need = 0
                frame = self._message(view[:need])
                if frame is not None:
                    out.append(frame)
        except FrameError as exc:
            self._parts = []
            self._have = self._need = 0
            return out, exc
        return out, None

    # ------------------------------------------------------------ buffered reading
    # A socket connection reads straight into these buffers (asyncio.BufferedProtocol):
    # into a small scratch buffer between messages, and a large message into a buffer of
    # its own, allocated once its length is known, so that its bytes are copied only by
    # the kernel. Small messages are copied out of the scratch buffer, which is reused.

    def get_buffer(self) -> memoryview:
        """Where the next bytes received are to go (`asyncio.BufferedProtocol.get_buffer`)."""
        if self._big is not None:
            return self._big[self._big_have :]
        if self._scratch is None:
            self._scratch = memoryview(bytearray(_SCRATCH))
            pending = self._joined() if self._parts else b""
            self._parts = []
            self._have = self._need = 0
            self._fill = 0
            if pending:
                self._place(pending)
        if self._fill == len(self._scratch):  # a header longer than the scratch buffer
            grown = memoryview(bytearray(2 * len(self._scratch)))
            grown[: self._fill] = self._scratch
            self._scratch = grown
        return self._scratch[self._fill :]

    def received(self, n: int) -> tuple[list[Frame], FrameError | None]:
        """`n` bytes were written where `get_buffer` said: the record batches they complete,
        and the error that stops the stream, if any (as `feed`)."""
        out: list[Frame] = []
        try:
            if self._big is not None:
                self._big_have += n
                if self._big_have == len(self._big):
                    whole, self._big = self._big, None
                    frame = self._message(whole)
                    if frame is not None:
                        out.append(frame)
                return out, None
            self._fill += n
            self._parse(out)
        except FrameError as exc:
            self._big = None
            self._fill = 0
            return out, exc
        return out, None

    def _place(self, data: bytes | memoryview) -> None:
        """Bytes read before buffered reading began: as if received into the scratch."""
        assert self._scratch is not None
        if len(data) > len(self._scratch):
            self._scratch = memoryview(bytearray(len(data)))
        self._scratch[: len(data)] = data
        self._fill = len(data)

    def _parse(self, out: list[Frame]) -> None:
        """Cut the whole messages out of the scratch buffer; move a message that does not
        fit in it to a buffer of its own."""
        assert self._scratch is not None
        buf, fill, pos = self._scratch, self._fill, 0
        limit = self.max_message_bytes
        while pos < fill:
            need = message_length(buf[:fill], pos, limit)
            if need is None:
                break
            if fill - pos >= need:
                frame = self._message(memoryview(bytes(buf[pos : pos + need])))
                pos += need
                if frame is not None:
                    out.append(frame)
                continue
            if need > len(buf) - pos:  # a large message: read the rest of it in place
                big = _uninitialized(need)
                have = fill - pos
                big[:have] = buf[pos:fill]
                self._big, self._big_have = big, have
                pos = fill
            break
        if pos:  # keep what is left of a message at the start, for the next read
            rest = fill - pos
            buf[:rest] = buf[pos:fill]
            fill = rest
        self._fill = fill

    def _message(self, data: memoryview) -> Frame | None:
        import pyarrow as pa  # noqa: PLC0415 (see the imports)
        from pyarrow import ipc  # noqa: PLC0415

        if self.ended:
            raise FrameError("malformed", "bytes after the end-of-stream marker")
        if len(data) == len(_EOS) and data == _EOS:
            self.ended = True
            return None
        buf = pa.py_buffer(data)
        if buf.address % 8:  # IPC messages are 8-byte multiples; a stream that breaks that
            buf = pa.py_buffer(bytes(data))  # still gets aligned columns
        try:
            msg = ipc.read_message(buf)
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise FrameError("malformed", f"not an Arrow IPC message: {exc}") from exc
        kind = msg.type
        if kind == "schema":
            if self.stream is not None:
                raise FrameError("schema_change", "a second schema in one stream")
            try:
                # UnicodeDecodeError (a ValueError): a field name that is not UTF-8
                self.stream = stream_of(ipc.read_schema(msg))
            except (pa.ArrowException, ValueError, OSError) as exc:
                raise FrameError("malformed", f"unreadable schema: {exc}") from exc
            return None
        if self.stream is None:
            raise FrameError("malformed", f"a {kind} message before the schema")
        if kind in ("dictionary", "dictionary batch"):
            # Dictionary-encoded columns are not among the types frames take; their rows
            # are rejected (wrong_type) when their batches come. The dictionary is skipped.
            return None
        if kind != "record batch":
            raise FrameError("malformed", f"unexpected IPC message: {kind}")
        try:
            batch = ipc.read_record_batch(msg, self.stream.read_schema or self.stream.schema)
            batch.validate(full=True)
        except (pa.ArrowException, ValueError, OSError, KeyError) as exc:
            raise FrameError("malformed", f"unreadable record batch: {exc}") from exc
        return Frame(self.stream, batch, len(data))

    def finish(self) -> FrameError | None:
        """The connection (or body) ended: an error when it ended inside a message."""
        left = self.pending
        if left:
            return FrameError("truncated", f"the stream ended inside a message ({left} bytes)")
        return None


def _uninitialized(n: int) -> memoryview:
    """n writable bytes, not zeroed first (the kernel fills them)."""
    import numpy as np  # noqa: PLC0415 (loaded with the first stream, as pyarrow is)

    return np.empty(n, dtype=np.uint8).data


def read_body(body: bytes, max_message_bytes: int) -> tuple[list[Frame], FrameError | None]:
    """A whole stream (a `POST /v1/events` body): its batches up to the first problem,
    and that problem."""
    reader = FrameReader(max_message_bytes)
    frames, err = reader.feed(body)
    if err is None:
        err = reader.finish()
    if err is None and reader.stream is None:
        err = FrameError("malformed", "no schema in the stream")
    return frames, err
