"""Atomic file replacement: a reader sees the old file or the new one, never a part of it."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

_T = TypeVar("_T")

# Filesystems that cannot fsync a folder say so with one of these; the rename is atomic
# all the same, so they are tolerated, unlike any other failure.
_FSYNC_DIR_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


def write_atomically(
    path: Path, write: Callable[[BinaryIO], _T], *, dir_mode: int = 0o777, mode: int = 0o600
) -> _T:
    """Write `path` through a temporary file beside it; returns what `write` returns.

    `write` gets the temporary file, open for reading and writing. The file is then
    fsynced, renamed over `path`, and the folder fsynced, so the new file survives a
    crash. The file gets `mode`; missing folders are created with `dir_mode` (less the
    umask). On any failure the temporary file is removed, the error propagates and `path`
    is left as it was (except for a failing folder fsync, which is raised after the
    rename). The temporary name, `.<name>.<8 random characters>.tmp`, is the pattern that
    `statefiles.clean_temp_files` removes after a crash: keep the two in step.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp made it 0o600; the rename keeps the mode set here
        with os.fdopen(fd, "w+b") as fh:
            result = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return result


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable: the folder's entry must reach the disk too."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_DIR_UNSUPPORTED:
            raise
    finally:
        os.close(fd)
