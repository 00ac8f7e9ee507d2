"""The one place files are hashed, written atomically (temporary file + rename) and locked.

A reader never sees a half-written file: writes go to a temporary file in the same directory,
are flushed to disk, then renamed over the target. A process killed mid-write leaves a
``.NAME.*.tmp`` file, which ``remove_stale_temporaries`` cleans up. ``locked`` is the one
inter-process lock (``filelock``: ``fcntl`` on POSIX, ``msvcrt`` on Windows), released when its
holder exits or is killed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, IO, Iterator


class LockedError(RuntimeError):
    """Another process holds the lock (raised by ``locked(..., wait=False)``)."""


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(binary file)`` on a temporary file next to ``path``, then rename it over.
    The file gets the permissions a plain ``open(path, "w")`` would give it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=1))


_TEMPORARY = re.compile(r"^\..+\.tmp\d*$")  # .NAME.*.tmp, and .NAME.tmp<pid> of earlier writers


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer left in ``directory`` (``.NAME.*.tmp``, and
    ``.NAME.tmp<pid>`` as releases before 0.2 named them); the removed paths."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp*"):
        if _TEMPORARY.match(tmp.name) and tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def locked(path: str | os.PathLike, *, wait: bool = True, what: str | None = None) -> Iterator[None]:
    """Hold the inter-process lock file ``path`` for the ``with`` block.

    ``wait=True`` blocks until the lock is free; ``wait=False`` raises :class:`LockedError` at once
    when another process holds it, naming ``what`` (default: the lock file) in the message.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(os.fspath(path))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        raise LockedError(f"{what or path} is in use by another process (lock file {path}); "
                          "wait for it to finish or stop it") from None
    try:
        yield
    finally:
        lock.release()
