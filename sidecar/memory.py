"""Giving freed memory back to the operating system after the daemon's large, rare jobs.

A drift check and a baseline load allocate and free tens of megabytes in a worker thread.
glibc's malloc keeps what a thread frees in that thread's arena for reuse, and raises its
threshold for serving large blocks by mmap after each one is freed, so that memory stays
in the process (8 MiB or more after one check of 100 features over a 10,000-event window)
until `malloc_trim` hands the free pages back. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the symbols the process has loaded: its libc's
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    f: Callable[[int], int] = trim
    return f


def give_back() -> None:
    """Return the C heap's free pages to the operating system (glibc only)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def then_give_back(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """`fn`, followed by `give_back()` in the same thread (the thread whose arena it used)."""

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        finally:
            give_back()

    return run


def arrow_uses_malloc() -> None:
    """Make arrow allocate with the C library's malloc, unless the user chose otherwise.

    Its default pool (mimalloc) keeps about 4 MiB more after a baseline load, and the
    daemon's loads are rare; the choice is read once, when pyarrow is first imported, so
    this must run before (the daemon imports pyarrow only to read or write a baseline).
    """
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
