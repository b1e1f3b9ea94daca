"""File-system primitives the log relies on: atomic writes, directory fsync, locks, swaps."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from recorder.errors import LogLockedError, TicktapeError
from recorder.log.schema import LOCK, TMP_PREFIX

__all__ = ["atomic_path", "exchange_and_unlock", "exchange_dirs", "fsync_dir", "lock_is_held",
           "release_lock", "take_lock"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a removal) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final` to write; on success it is fsynced and renamed
    over `final` and the directory is fsynced, so a reader or a crash sees the old file or
    the whole new one. On failure the temporary file is removed and the error propagates.

    The temporary name starts with TMP_PREFIX, which Parquet globs skip and `recover` clears.
    """
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def lock_is_held(directory: Path) -> bool:
    """True while a live recorder (or recover/compact) holds the log's flock."""
    try:
        fd = os.open(directory / LOCK, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def take_lock(directory: Path) -> int:
    """Hold the log's flock (exclusive, non-blocking); returns the fd to pass to release_lock."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise LogLockedError(f"{directory} is being written by another live recorder") from exc
    return fd


def release_lock(directory: Path, fd: int) -> None:
    """Remove the lock file, then let go of the flock (in that order: no one sees a stale lock)."""
    with contextlib.suppress(FileNotFoundError):
        (directory / LOCK).unlink()
    os.close(fd)


def exchange_dirs(a: Path, b: Path) -> None:
    """Swap two directories in one atomic step (Linux renameat2 RENAME_EXCHANGE): any reader
    resolving either path sees one whole directory or the other, never a mix."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise TicktapeError("this system lacks renameat2: cannot swap directories atomically")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise TicktapeError(f"the file system under {a.parent} cannot swap directories "
                                "atomically (renameat2 RENAME_EXCHANGE)")
        raise OSError(code, os.strerror(code), str(a))
    fsync_dir(a.parent)


def exchange_and_unlock(target: Path, staging: Path, lock_fd: int) -> None:
    """Swap `staging` in for the log at `target` (exchange_dirs), then let go of the log's
    lock held as `lock_fd`. After the swap its lock file sits in the old directory, now at
    `staging`, which the caller removes; if the swap fails the lock is released in place."""
    try:
        exchange_dirs(target, staging)
    except BaseException:
        release_lock(target, lock_fd)
        raise
    os.close(lock_fd)
