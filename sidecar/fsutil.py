"""Careful file-system primitives: bounded reads of regular files only, folders with an
exact mode, exclusive locks, and setting a bad file aside instead of deleting it.

Everything here works on paths that someone else may have tampered with: a symlink, a FIFO
or a device where a file should be, a file far larger than it can legitimately be. Reads
open with O_NOFOLLOW and O_NONBLOCK, check the type and size on the open descriptor (not on
the path, so nothing can be swapped in between), and never read more than asked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from pathlib import Path

from sidecar.errors import StateError

_KINDS = (
    (stat.S_ISLNK, "a symlink"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def kind_of(mode: int) -> str:
    """What a file is, in words ("a regular file", "a symlink", ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    for check, words in _KINDS:
        if check(mode):
            return words
    return "not a regular file"


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of `path` if it is a regular file of at most `max_bytes`; else StateError.

    The error carries `bad_file` when the file exists but must not be trusted (a symlink, a
    FIFO, a device, too large), so the caller can set it aside; a missing file has none.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise StateError(f"{path}: unreadable (missing)") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise StateError(f"{path}: unreadable (a symlink)", bad_file=path) from exc
        raise StateError(f"{path}: unreadable ({exc.strerror or exc})", bad_file=path) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StateError(f"{path}: unreadable ({kind_of(st.st_mode)})", bad_file=path)
        if st.st_size > max_bytes:
            raise StateError(
                f"{path}: unreadable (too large: {st.st_size} bytes, at most {max_bytes})",
                bad_file=path,
            )
        chunks: list[bytes] = []
        left = max_bytes + 1  # one byte more tells a file that grew while being read
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise StateError(f"{path}: unreadable ({exc.strerror or exc})", bad_file=path) from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise StateError(f"{path}: unreadable (grew past {max_bytes} bytes)", bad_file=path)
    return data


def set_aside(path: Path) -> Path | None:
    """Rename a file that must not be used to `<name>.corrupt-<time>`; never delete it.

    Returns the new path, or None when the rename failed (the caller then ignores the file).
    """
    stamp = time.time_ns()
    for i in range(100):
        aside = path.with_name(
            f"{path.name}.corrupt-{stamp // 1_000_000_000}" + (f"-{i}" if i else "")
        )
        if os.path.lexists(aside):
            continue
        try:
            os.rename(path, aside)  # renames a symlink itself, never its target
        except OSError:
            return None
        return aside
    return None


def make_dirs(path: Path, mode: int = 0o750) -> None:
    """Create `path` and any missing parents with exactly `mode`, whatever the umask.

    Each folder this call creates gets `mode` through fchmod on a descriptor opened with
    O_NOFOLLOW, so a symlink swapped in after mkdir is refused rather than followed. Folders
    that already exist, or that another process creates meanwhile, are left as they are.
    Raises OSError.
    """
    missing: list[Path] = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            continue  # someone else's: not ours to change
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    if not os.path.isdir(path):  # a file where the folder should be (a link to one is fine)
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))


def umask_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process umask.

    Read from /proc (Linux) so that no thread ever sees a changed umask; elsewhere the
    umask is set and restored at once.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return 0o666 & ~old


class LockHeld(Exception):
    """Another process holds the lock; `owner` is what it wrote in the lock file."""

    def __init__(self, path: Path, owner: str) -> None:
        self.path = path
        self.owner = owner
        super().__init__(f"{path} is locked by {owner or 'another process'}")


class FileLock:
    """An exclusive `flock` on a lock file, held for the life of the process.

    The lock file holds the owner's pid, for the message a second process prints. It is
    removed on release only if this process created it and it is still the same file, so
    a lock file left by a killed process (which the kernel has already unlocked) is reused
    and left in place.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._created = False
        self._ident: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise LockHeld; OSError when the lock file cannot be used."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        for _ in range(10):
            created = True
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                created = False
                fd = os.open(self.path, flags)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(errno.EINVAL, f"lock file is {kind_of(st.st_mode)}")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise LockHeld(self.path, _owner(fd)) from None
                # A holder that released and removed the file between our open and our
                # flock leaves us locking an orphan: take the lock again on the new file.
                try:
                    now = os.lstat(self.path)
                except FileNotFoundError:
                    now = None
                if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    os.close(fd)
                    continue
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}\n".encode())
            self._fd, self._created = fd, created
            self._ident = (st.st_dev, st.st_ino)
            return
        raise OSError(errno.EAGAIN, f"{self.path}: the lock file keeps changing")

    def release(self) -> None:
        if self._fd is None:
            return
        if self._created:
            with contextlib.suppress(OSError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._ident:
                    os.unlink(self.path)  # while still locked: nobody can hold it meanwhile
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None


def _owner(fd: int) -> str:
    with contextlib.suppress(OSError):
        raw = os.pread(fd, 64, 0)
        text = raw.decode("ascii", "replace").strip()
        if text.startswith("pid ") and text[4:].isdigit():
            return text
    return ""
