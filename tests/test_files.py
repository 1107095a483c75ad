"""Atomic replacement: a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pytest

from sidecar.files import write_atomically


def test_replaces_and_returns_the_writers_result(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "data.bin"

    def write(fh: BinaryIO) -> int:
        fh.write(b"new contents")
        fh.flush()
        fh.seek(0)
        return len(fh.read())

    assert write_atomically(target, write) == len(b"new contents")
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.bin"]


def test_a_failing_writer_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    def write(fh: BinaryIO) -> None:
        fh.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, write)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]
