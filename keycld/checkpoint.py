"""Pytrees as Flax msgpack files (no pickle), written atomically (``keycld.fileio``)."""
from __future__ import annotations

import os
from pathlib import Path

from flax import serialization

from keycld import fileio


def save(path: str | os.PathLike, tree) -> None:
    """Serialise a pytree of arrays/ints to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes(path, serialization.to_bytes(tree))


def load(path: str | os.PathLike, target):
    """Restore a pytree with the structure of ``target`` from ``path``."""
    data = Path(path).read_bytes()
    try:
        return serialization.from_bytes(target, data)
    except Exception as err:
        raise ValueError(f"checkpoint {path} is unreadable or does not match the model: {err}") from None


def load_entry(path: str | os.PathLike, key: str, target):
    """Restore the entry ``key`` of a serialised dict (e.g. the params of a training checkpoint)
    with the structure of ``target``, without knowing the rest of the file's structure."""
    try:
        raw = serialization.msgpack_restore(Path(path).read_bytes())
        if not isinstance(raw, dict) or key not in raw:
            raise ValueError(f"no {key!r} entry")
        return serialization.from_state_dict(target, raw[key])
    except Exception as err:
        raise ValueError(f"checkpoint {path} is unreadable or does not match the model: {err}") from None
