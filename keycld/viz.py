"""Small image helpers: previews, side-by-side strips, GIFs (imageio), heatmap colouring."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def atomic_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """(final path, temporary sibling path) for write-then-rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image atomically (format from the suffix)."""
    import imageio.v3 as iio

    final, tmp = atomic_path(path)
    iio.imwrite(tmp, image, extension=final.suffix)
    os.replace(tmp, final)


def save_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 20.0) -> None:
    """Write (T, H, W, 3) uint8 frames as a looping GIF atomically."""
    import imageio.v3 as iio

    final, tmp = atomic_path(path)
    iio.imwrite(tmp, np.asarray(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    os.replace(tmp, final)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] -> uint8 (values outside are an error upstream, clipped only here for display)."""
    return (np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def tile(frames: np.ndarray, cols: int) -> np.ndarray:
    """(N, H, W, 3) -> one (rows*H, cols*W, 3) image; missing cells are black."""
    n, h, w, c = frames.shape
    rows = -(-n // cols)
    out = np.zeros((rows * h, cols * w, c), frames.dtype)
    for i in range(n):
        r, q = divmod(i, cols)
        out[r * h:(r + 1) * h, q * w:(q + 1) * w] = frames[i]
    return out


def save_preview(dataset, path: str | os.PathLike, runs: int = 8, frames: int = 8) -> None:
    """PNG grid: ``runs`` rows of the first ``frames`` frames (every other frame) of a dataset."""
    r = min(runs, len(dataset))
    step = max(1, dataset.frames.shape[1] // frames)
    sel = dataset.frames[:r, ::step][:, :frames]
    save_image(path, tile(sel.reshape(-1, *sel.shape[2:]), sel.shape[1]))
