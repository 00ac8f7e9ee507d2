"""Checkpoints as Flax msgpack (no pickle), written atomically (temporary file + rename)."""
from __future__ import annotations

import os
from pathlib import Path

from flax import serialization

CHECKPOINT = "checkpoint.msgpack"  # params + optimiser state + counters (resumable)
PARAMS = "params.msgpack"  # weights only (exported models)


def save(path: str | os.PathLike, tree) -> None:
    """Serialise a pytree of arrays/ints to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(serialization.to_bytes(tree))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str | os.PathLike, target):
    """Restore a pytree with the structure of ``target`` from ``path``."""
    data = Path(path).read_bytes()
    try:
        return serialization.from_bytes(target, data)
    except Exception as err:
        raise ValueError(f"checkpoint {path} is unreadable or does not match the model: {err}") from None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (identifies the weights a cache was built from)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
