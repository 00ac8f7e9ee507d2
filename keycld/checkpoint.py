"""Checkpoints as Flax msgpack (no pickle), written atomically (temporary file + rename)."""
from __future__ import annotations

import os
from pathlib import Path

from flax import serialization

CHECKPOINT = "checkpoint.msgpack"


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
