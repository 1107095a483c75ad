"""The event socket's file: claimed under a lock, created with its mode, removed only if ours.

Rules, in the order `claim` applies them:
1. Missing folders are created with mode 0750 (whatever the umask).
2. An exclusive flock on `<socket>.lock` is taken; a second sidecar on the same path
   stops there, with a message naming the first one's pid.
3. Whatever is at the path is looked at without following it: nothing is fine; a socket
   that accepts a connection belongs to a live process and is refused; a socket that
   refuses (ECONNREFUSED) is a stale one from a dead process and is replaced; anything
   else (regular file, folder, symlink, FIFO...) is refused and left untouched.
4. The socket is bound while the umask is `~mode`, so the kernel creates it with exactly
   `socket.mode`; no chmod ever goes through the path, so a symlink swapped in cannot
   redirect one. bind() itself fails if anything appeared at the path meanwhile, so no
   file is ever replaced by the bind.
5. The (device, inode) of the new socket file is recorded; `problem()` compares the path
   against it (`/healthz` fails when the socket is gone or replaced), and `close()` unlinks
   the path only while it is still that inode.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path

import structlog

from sidecar.errors import SocketError
from sidecar.fsutil import FileLock, LockHeld, kind_of, make_dirs

log = structlog.get_logger("sidecar.ingest")

DIR_MODE = 0o750


class OwnedSocket:
    """A listening Unix socket at `path` that this process created and will clean up."""

    def __init__(self, path: str, mode: int) -> None:
        self.path = Path(path)
        self.mode = mode
        self.lock = FileLock(self.path.with_name(self.path.name + ".lock"))
        self.sock: socket.socket | None = None
        self._ident: tuple[int, int] | None = None

    def claim(self) -> socket.socket:
        """Lock, check and bind; returns the bound socket. Raises SocketError (one line)."""
        where = f"socket.path {self.path}"
        try:
            make_dirs(self.path.parent, DIR_MODE)
        except OSError as exc:
            raise SocketError(
                f"{where}: cannot create folder {self.path.parent}: {exc.strerror or exc}"
            ) from exc
        try:
            self.lock.acquire()
        except LockHeld as exc:
            raise SocketError(
                f"{where}: in use by another drift-sidecar ({exc.owner or 'pid unknown'} "
                f"holds {exc.path})"
            ) from exc
        except OSError as exc:
            raise SocketError(
                f"{where}: cannot lock {self.lock.path}: {exc.strerror or exc}"
            ) from exc
        try:
            self._clear_stale(where)
            self.sock = self._bind(where)
        except BaseException:
            self.lock.release()
            raise
        return self.sock

    def _clear_stale(self, where: str) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketError(
                f"{where}: exists and is {kind_of(st.st_mode)}; "
                "remove it or choose another path (it was left untouched)"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except ConnectionRefusedError:
            pass  # nobody listens: a stale socket from a process that is gone
        except OSError as exc:
            # EAGAIN: a full backlog, so someone listens; EACCES and others: we cannot tell.
            raise SocketError(
                f"{where}: an existing socket cannot be checked ({exc.strerror or exc}); "
                "it was left untouched"
            ) from exc
        else:
            raise SocketError(
                f"{where}: another process is listening on it; stop it or choose another path"
            )
        finally:
            probe.close()
        with contextlib.suppress(FileNotFoundError):
            now = os.lstat(self.path)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise SocketError(f"{where}: changed while being checked; left untouched")
            os.unlink(self.path)
            log.info(
                "socket_stale_replaced", path=str(self.path), reason="no process listened on it"
            )

    def _bind(self, where: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The kernel creates the socket file with 0o777 & ~umask: this umask gives exactly
        # the configured mode. The umask is process-wide, but nothing else creates files
        # during start-up, and this lasts one bind() call.
        old = os.umask(0o777 & ~self.mode)
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise SocketError(
                    f"{where}: something was created there meanwhile; left untouched"
                ) from exc
            raise SocketError(f"{where}: cannot bind: {exc.strerror or exc}") from exc
        finally:
            os.umask(old)
        st = os.lstat(self.path)
        self._ident = (st.st_dev, st.st_ino)
        return sock

    def problem(self) -> str | None:
        """None while the path is still this process's socket; else what happened to it."""
        if self._ident is None:
            return None
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return f"socket {self.path} was removed"
        except OSError as exc:
            return f"socket {self.path} cannot be checked: {exc.strerror or exc}"
        if (st.st_dev, st.st_ino) != self._ident:
            return f"socket {self.path} was replaced by another file"
        return None

    def close(self) -> None:
        """Unlink the socket file if it is still ours, then release the lock."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._ident is not None and self.problem() is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._ident = None
        self.lock.release()
