"""Pytrees as Flax msgpack files (no pickle), written atomically (``keycld.fileio``).

Restoring checks the file's tree against the target's: the same keys and, leaf by leaf, the
same shape, so weights of another model never load into a model they do not fit.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from flax import serialization

from keycld import fileio


def save(path: str | os.PathLike, tree) -> None:
    """Serialise a pytree of arrays/ints to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes(path, serialization.to_bytes(tree))


def read_raw(path: str | os.PathLike, data: bytes | None = None) -> dict:
    """The nested dict of arrays stored in ``path`` (``data``: its bytes, if already read);
    ValueError naming the file when it is not a msgpack tree."""
    try:
        raw = serialization.msgpack_restore(Path(path).read_bytes() if data is None else data)
    except Exception as err:
        raise ValueError(f"checkpoint {path} is unreadable: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"checkpoint {path} is unreadable: it holds a {type(raw).__name__}, not a tree")
    return raw


def mismatch(target, raw, where: str = "") -> str | None:
    """How the stored tree ``raw`` differs from ``target`` (keys, shapes), or None if it fits."""
    if isinstance(target, dict):
        if not isinstance(raw, dict):
            return f"{where or 'the tree'} is a {type(raw).__name__}, the model needs a tree of {sorted(target)}"
        missing, extra = sorted(set(target) - set(raw)), sorted(set(raw) - set(target))
        if missing or extra:
            return (f"{where or 'the tree'} has " + (f"no {missing}" if missing else "")
                    + (" and " if missing and extra else "") + (f"unexpected {extra}" if extra else ""))
        for key in target:
            found = mismatch(target[key], raw[key], f"{where}/{key}")
            if found:
                return found
        return None
    want, got = tuple(np.shape(target)), tuple(np.shape(raw))
    if isinstance(raw, dict) or want != got:
        return f"{where} has shape {got if not isinstance(raw, dict) else 'of a tree'}, the model needs {want}"
    return None


def restore(path: str | os.PathLike, raw: dict, target):
    """``target``'s structure filled from the stored tree ``raw`` of ``path``; ValueError naming
    the file and the first entry that does not fit."""
    state = serialization.to_state_dict(target)
    found = mismatch(state, raw)
    if found:
        raise ValueError(f"checkpoint {path} does not match the model: {found}")
    try:
        return serialization.from_state_dict(target, raw)
    except Exception as err:
        raise ValueError(f"checkpoint {path} does not match the model: {err}") from None


def load(path: str | os.PathLike, target):
    """Restore a pytree with the structure of ``target`` from ``path``."""
    return restore(path, read_raw(path), target)


def load_entry(path: str | os.PathLike, key: str, target, data: bytes | None = None):
    """Restore the entry ``key`` of a serialised dict (e.g. the params of a training checkpoint)
    with the structure of ``target``, without knowing the rest of the file's structure."""
    raw = read_raw(path, data)
    if key not in raw:
        raise ValueError(f"checkpoint {path} has no {key!r} entry")
    return restore(path, raw[key], target)
