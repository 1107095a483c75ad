"""What `state_dir` holds besides window snapshots, and how it is read when it may be damaged.

- File names for models (`state_name`): an injective encoding, so two model names never
  share a file.
- Start-up care of the folder (`prepare_state_dir`): its subfolders are real folders, a
  write works (or the daemon runs degraded and says so), and temporary files left by a
  process killed mid-write are removed (only names of the sidecar's own temp pattern).
- Loaders that never raise: a captured baseline (`load_captured_baseline`), the list of
  auto-registered models (`read_auto_models`) and the arrays of a snapshot (`read_npz`,
  which raises StateError only). Whatever cannot be trusted is set aside with a log line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import structlog

from sidecar.config import BaselineSpec, FeatureSpec, ModelSpec, PredictionSpec
from sidecar.errors import StateError
from sidecar.fsutil import make_dirs, read_regular, set_aside

log = structlog.get_logger("sidecar.state")

DIR_MODE = 0o750
SUBDIRS = ("windows", "baselines", "labels")
AUTO_MODELS_FILE = "auto_models.json"
AUTO_MODELS_FORMAT = 1
MAX_AUTO_MODELS_BYTES = 16 << 20
MAX_JSON_BYTES = 64 << 20
"""Manifests: feature names and category vocabularies; far above any real one."""

_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_MAX_STEM = 100

# tempfile.mkstemp names: prefix, 8 characters of [a-z0-9_], suffix. The atomic writers
# use `.<target name>.` and `.tmp`; the second pattern is the one before `.tmp` was added.
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
_OLD_TEMP_NAME = re.compile(r"\..+\.(json|npz)\.[a-z0-9_]{8}")


def state_name(model: str) -> str:
    """The file stem of a model: letters, digits, `_` and `-` as they are, every other
    character as `%XX` per UTF-8 byte (so the encoding is injective and has no dots). A stem
    longer than 100 characters keeps its first 40 and adds `~` and the name's full sha256
    (`~` is never left unencoded, so a long stem cannot equal a short one)."""
    raw = model.encode("utf-8", "surrogatepass")
    if not raw:
        return "%"
    out = []
    for ch in model:
        if ch in _PLAIN:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    stem = "".join(out)
    if len(stem) > _MAX_STEM:
        stem = stem[:40] + "~" + hashlib.sha256(raw).hexdigest()
    return stem


def legacy_name(model: str) -> str:
    """The stem earlier versions used (not injective: `a/b` and `a_b-<hash>` could meet);
    read only when its content names the same model."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", model)[:80]
    if clean != model:
        clean += "-" + hashlib.sha256(model.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return clean


# ------------------------------------------------------------------------ the folder


def prepare_state_dir(root: Path) -> str | None:
    """Make `root` usable; None when a test write worked, else why it did not (degraded).

    Subfolders that are not real folders (a symlink, a file) are set aside and created
    again. Never raises.
    """
    try:
        make_dirs(root, DIR_MODE)
    except OSError as exc:
        return f"cannot create {root}: {exc.strerror or exc}"
    for sub in SUBDIRS:
        path = root / sub
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            return f"cannot inspect {path}: {exc.strerror or exc}"
        if st is not None and not stat.S_ISDIR(st.st_mode):
            aside = set_aside(path)
            log.warning(
                "state_set_aside",
                path=str(path),
                moved_to=str(aside) if aside else None,
                reason="not a folder",
            )
            if aside is None:
                return f"{path} is not a folder and cannot be moved aside"
        try:
            make_dirs(path, DIR_MODE)
        except OSError as exc:
            return f"cannot create {path}: {exc.strerror or exc}"
    return probe_writable(root / "windows")


def probe_writable(folder: Path) -> str | None:
    """Write, fsync and remove a small file; None if that worked, else the error."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe.", suffix=".tmp")
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror or exc}"
    try:
        os.write(fd, b"probe\n")
        os.fsync(fd)
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror or exc}"
    finally:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
    return None


def clean_temp_files(root: Path) -> list[str]:
    """Remove temporary files a killed writer left behind; returns their names.

    Only regular files whose names match the writers' own temp pattern, only in the
    sidecar's subfolders: anything else in `state_dir` is left alone. Call it only while
    holding the state folder's lock, or a live writer's file could go.
    """
    removed = []
    for sub in SUBDIRS:
        folder = root / sub
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if not (TEMP_NAME.fullmatch(name) or _OLD_TEMP_NAME.fullmatch(name)):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(f"{sub}/{name}")
    return removed


# ------------------------------------------------------------------------ snapshot arrays


def decode_json(data: bytes, where: Path) -> Any:
    """JSON as the sidecar writes it: no NaN or Infinity, no unbounded nesting."""

    def no_constants(token: str) -> Any:
        raise ValueError(f"{token} is not allowed")

    try:
        return json.loads(data, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise StateError(
            f"{where}: unreadable ({type(exc).__name__}: {exc})"[:300], bad_file=where
        ) from exc


def read_npz(data: bytes, allowed: Collection[str], where: Path) -> dict[str, np.ndarray]:
    """The arrays of an `np.savez` file, checked before anything is allocated.

    Only stored (uncompressed) members named `<allowed>.npy`, each a numeric array whose
    header's shape and dtype account for exactly its bytes: a header claiming 10**12 rows
    is refused instead of allocated. Raises StateError.
    """
    # Imported here: a daemon with no model reads no arrays, and zipfile (with what it
    # imports) is about 0.25 MiB.
    import zipfile  # noqa: PLC0415

    # zipfile raises many kinds of error on a damaged archive (BadZipFile, struct.error,
    # RuntimeError for an "encrypted" member, NotImplementedError...): each means the same.
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception as exc:
        raise StateError(
            f"{where}: unreadable arrays (not a zip file: {exc})"[:300], bad_file=where
        ) from exc
    if len(infos) > len(allowed):
        raise StateError(f"{where}: unreadable arrays ({len(infos)} members)", bad_file=where)
    out: dict[str, np.ndarray] = {}
    for info in infos:
        key = info.filename.removesuffix(".npy")
        if key not in allowed or key in out or not info.filename.endswith(".npy"):
            raise StateError(
                f"{where}: unreadable arrays (unexpected member {info.filename[:80]!r})",
                bad_file=where,
            )
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > len(data):
            raise StateError(
                f"{where}: unreadable arrays ({key}: compressed or oversized)", bad_file=where
            )
        try:
            raw = zf.read(info)
        except Exception as exc:
            raise StateError(
                f"{where}: unreadable arrays ({key}: {exc})"[:300], bad_file=where
            ) from exc
        out[key] = _parse_npy(raw, key, where)
    return out


def _parse_npy(raw: bytes, key: str, where: Path) -> np.ndarray:
    fmt = np.lib.format
    f = io.BytesIO(raw)
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"npy format {version}")
    except Exception as exc:  # any header numpy cannot parse: a bad file, not a defect
        raise StateError(
            f"{where}: unreadable arrays ({key}: {exc})"[:300], bad_file=where
        ) from exc
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.subdtype is not None:
        raise StateError(f"{where}: unreadable arrays ({key}: dtype {dtype})", bad_file=where)
    count = 1
    for n in shape:
        count *= n  # Python integers: an absurd shape cannot overflow
    offset = f.tell()
    if count * dtype.itemsize != len(raw) - offset:
        raise StateError(
            f"{where}: unreadable arrays ({key}: shape {shape} does not match "
            f"its {len(raw) - offset} bytes)"[:300],
            bad_file=where,
        )
    flat = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C")


# ------------------------------------------------------------------------ captured baselines


def captured_limits(rows: int, columns: int) -> tuple[int, int]:
    """(max file bytes, max declared uncompressed bytes) of a captured baseline of `rows`
    rows: 64 MiB plus 1 KiB a value, four times over (the capture size may since have
    been lowered). Beyond that a file is not one this sidecar wrote."""
    cap = (64 << 20) + 4 * max(rows, 1) * max(columns, 1) * 1024
    return cap, cap


def load_captured_baseline(
    path: Path,
    model: str,
    load: Callable[[bytes], Any],
    *,
    max_rows: int,
    columns: int,
    legacy: bool = False,
    keep: bool = False,
) -> Any:
    """A captured baseline (`load(data)` parses the bytes), or None. Never raises.

    The file must be a regular file within `captured_limits`, a parquet file whose footer
    declares at most `4 * max_rows` rows and bounded column sizes, and `load` must accept
    it; otherwise it is set aside (renamed, not deleted) with a log line, and the model
    captures a new baseline. A `legacy` file (old naming) is only used when its metadata
    names this model, and is never moved; with `keep`, no file is moved.
    """
    max_bytes, max_uncompressed = captured_limits(max_rows, columns)
    try:
        data = read_regular(path, max_bytes)
        _check_parquet_bounds(data, path, 4 * max(max_rows, 1), max_uncompressed)
        if legacy and _parquet_model(data) != model:
            log.info(
                "state_ignored",
                model=model,
                path=str(path),
                reason="an older file name that belongs to another model",
            )
            return None
        return load(data)
    except StateError as exc:
        if exc.bad_file is None:  # missing: nothing was captured yet
            return None
        reason = str(exc)
    except Exception as exc:  # the state folder is ours: any failure sets the file aside
        reason = f"{type(exc).__name__}: {exc}"[:300]
    if legacy or keep:
        log.warning("state_ignored", model=model, path=str(path), reason=reason)
        return None
    aside = set_aside(path)
    log.warning(
        "state_discarded",
        model=model,
        reason=reason,
        moved_to=str(aside) if aside else None,
        action="capturing the baseline again",
    )
    return None


def _check_parquet_bounds(data: bytes, where: Path, max_rows: int, max_bytes: int) -> None:
    # pyarrow only where a parquet file is read (see sidecar.baseline)
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    try:
        meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise StateError(
            f"{where}: not a readable parquet file ({exc})"[:300], bad_file=where
        ) from exc
    if meta.num_rows > max_rows or meta.num_rows < 0:
        raise StateError(
            f"{where}: {meta.num_rows} rows, more than a capture holds", bad_file=where
        )
    # The row group's own total (its columns' uncompressed sizes), never the per-column
    # accessor: pyarrow builds a column chunk's metadata in a call that cannot raise, so a
    # damaged column entry aborts the whole process instead of raising here.
    declared = 0
    for i in range(meta.num_row_groups):
        declared += max(meta.row_group(i).total_byte_size, 0)
        if declared > max_bytes:
            raise StateError(
                f"{where}: columns declare more than {max_bytes} bytes", bad_file=where
            )


def _parquet_model(data: bytes) -> str | None:
    import pyarrow as pa  # noqa: PLC0415 - see _check_parquet_bounds
    import pyarrow.parquet as pq  # noqa: PLC0415

    from sidecar.baseline_meta import METADATA_KEY  # noqa: PLC0415 - baseline imports are heavy

    schema = pq.ParquetFile(pa.BufferReader(data)).schema_arrow
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    doc = json.loads(raw)
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) else None


# ------------------------------------------------------------------------ auto-registered


class _AutoFeature(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    type: str


class _AutoModel(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    version: str
    features: list[_AutoFeature]
    prediction: str | None


class _AutoModels(msgspec.Struct, forbid_unknown_fields=True):
    format: int
    models: list[_AutoModel]


def auto_models_doc(specs: Iterable[ModelSpec]) -> bytes:
    """The auto-registered models' specs, for `read_auto_models` after a restart."""
    doc = _AutoModels(
        AUTO_MODELS_FORMAT,
        [
            _AutoModel(
                name=s.name,
                version=s.version,
                features=[_AutoFeature(f.name, f.type) for f in s.features],
                prediction=s.prediction.type if s.prediction is not None else None,
            )
            for s in specs
        ],
    )
    return msgspec.json.encode(doc)


def read_auto_models(
    root: Path, *, capture: int, max_models: int, max_features: int
) -> list[ModelSpec]:
    """The auto-registered models saved in `state_dir`, at most `max_models`. Never raises;
    a file that does not decode, or holds entries no sidecar would write, is set aside."""
    path = root / AUTO_MODELS_FILE
    try:
        data = read_regular(path, MAX_AUTO_MODELS_BYTES)
        doc = msgspec.json.decode(data, type=_AutoModels)
        if doc.format != AUTO_MODELS_FORMAT:
            raise ValueError(f"format {doc.format}, expected {AUTO_MODELS_FORMAT}")
        specs = []
        for m in doc.models[:max_models]:
            kinds = {f.type for f in m.features} | {m.prediction or "numeric"}
            names = [f.name for f in m.features]
            if (
                not m.name
                or len(m.features) > max_features
                or len(set(names)) != len(names)
                or not kinds <= {"numeric", "categorical"}
            ):
                raise ValueError(f"model {m.name[:80]!r}: not an auto-registered model's spec")
            specs.append(
                ModelSpec(
                    name=m.name,
                    version=m.version,
                    baseline=BaselineSpec(capture=capture),
                    features=[
                        FeatureSpec(name=f.name, type=f.type)  # type: ignore[arg-type]
                        for f in m.features
                    ],
                    prediction=(
                        PredictionSpec(type=m.prediction)  # type: ignore[arg-type]
                        if m.prediction
                        else None
                    ),
                )
            )
        return specs
    except StateError as exc:
        if exc.bad_file is None:
            return []
        reason = str(exc)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError) as exc:
        reason = f"{type(exc).__name__}: {exc}"[:300]
    aside = set_aside(path)
    log.warning(
        "state_discarded",
        path=str(path),
        reason=reason,
        moved_to=str(aside) if aside else None,
        action="auto-registered models register again on their next event",
    )
    return []
