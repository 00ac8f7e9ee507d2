"""Small image helpers: previews, side-by-side strips, GIFs within a byte budget, heatmap colouring."""
from __future__ import annotations

import io
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keycld import fileio

GIF_MAX_BYTES = 300_000
"""Default byte budget of :func:`save_gif`."""
GIF_MIN_BYTES = 4096
"""Smallest budget :func:`save_gif` accepts (a one-frame GIF with a full palette is ~1 KB)."""
GIF_MIN_FRAME_MS = 20
"""Shortest frame time written; browsers play GIF delays of 10 ms or less at 100 ms."""
_PALETTE_COLOURS = 255  # one palette index stays free for the transparent "unchanged" pixels


@dataclass(frozen=True)
class GifInfo:
    """What :func:`save_gif` wrote: ``frames`` frames of ``height`` × ``width`` px, each shown
    ``frame_ms`` ms, taken as every ``step``-th input frame from the start; ``nbytes`` file size."""
    path: Path
    nbytes: int
    frames: int
    step: int
    height: int
    width: int
    frame_ms: int

    @property
    def seconds(self) -> float:
        """Playback length of the written clip (s)."""
        return self.frames * self.frame_ms / 1000.0


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image atomically (format from the suffix; parent folders created)."""
    import imageio.v3 as iio

    path = Path(path)
    data = iio.imwrite("<bytes>", image, extension=path.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes(path, data)


def save_figure(path: str | os.PathLike, fig, dpi: int = 100) -> None:
    """Write a matplotlib figure as PNG atomically (parent folders created); the figure stays open."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format="png"))


def _check_gif_args(path: Path, frames: np.ndarray, fps: float, max_bytes: int, min_fps: float,
                    min_side: int) -> None:
    if path.suffix.lower() != ".gif":
        raise ValueError(f"save_gif writes GIF files; the path must end in .gif, got {str(path)!r}")
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        kind = frames.dtype if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"frames must be a uint8 numpy array, got {kind}; convert with keycld.viz.to_uint8")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    if min(frames.shape) == 0:
        raise ValueError(f"frames must hold at least one frame of at least 1×1 px, got shape {frames.shape}")
    if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) or max_bytes < GIF_MIN_BYTES:
        raise ValueError(f"max_bytes must be an integer >= {GIF_MIN_BYTES}, got {max_bytes!r}")
    if not (isinstance(min_fps, numbers.Real) and math.isfinite(min_fps) and min_fps > 0):
        raise ValueError(f"min_fps must be a finite number > 0, got {min_fps!r}")
    if isinstance(min_side, bool) or not isinstance(min_side, numbers.Integral) or min_side < 1:
        raise ValueError(f"min_side must be an integer >= 1, got {min_side!r}")


def _frame_ms(fps: float, step: int) -> int:
    """Display time of every ``step``-th frame of an ``fps`` clip, rounded to the GIF's 10 ms unit."""
    return max(GIF_MIN_FRAME_MS, 10 * round(100.0 * step / fps))


def _halve(frames: np.ndarray, halvings: int) -> np.ndarray:
    """Downscale (T, H, W, 3) frames ``halvings`` times by 2 (area average; sides at least 1 px)."""
    if halvings == 0:
        return frames
    from PIL import Image

    h, w = frames.shape[1:3]
    size = (max(1, w >> halvings), max(1, h >> halvings))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BOX)) for f in frames])


def _shared_palette(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 frames -> ((T, H, W) uint8 palette indices, (K <= 255, 3) uint8 palette).

    A clip of at most 255 distinct colours keeps them exactly. Otherwise Pillow's median cut splits the
    set of distinct colours, each counted once (not once per pixel, so the few colours of a small moving
    object are not outvoted by a large background), and every pixel gets the nearest palette colour
    (squared RGB distance, first on ties; no dithering)."""
    from PIL import Image

    keys = (frames[..., 0].astype(np.uint32) << 16) | (frames[..., 1].astype(np.uint32) << 8) | frames[..., 2]
    present = np.zeros(1 << 24, bool)
    present[keys.ravel()] = True
    colours = np.flatnonzero(present).astype(np.uint32)
    rgb = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=-1).astype(np.uint8)
    if len(rgb) <= _PALETTE_COLOURS:
        palette = rgb
    else:
        fitted = Image.fromarray(rgb[:, None, :]).quantize(_PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT,
                                                           dither=Image.Dither.NONE)
        used = np.unique(np.asarray(fitted))
        palette = np.asarray(fitted.getpalette(), np.uint8).reshape(-1, 3)[used]
    lut = np.zeros(1 << 24, np.uint8)
    pal = palette.astype(np.int32)
    chunk = 1 << 14
    for start in range(0, len(rgb), chunk):
        d = ((rgb[start:start + chunk, None, :].astype(np.int32) - pal[None]) ** 2).sum(-1)
        lut[colours[start:start + chunk]] = d.argmin(1)
    return lut[keys], palette


def _encode_gif(frames: np.ndarray, frame_ms: int) -> bytes:
    """(T, H, W, 3) uint8 -> looping GIF bytes with one shared palette (``_shared_palette``). Pillow's
    ``optimize`` crops each frame to the box that changed, writes unchanged pixels as the free 256th
    (transparent) index and merges identical consecutive frames (their durations add up)."""
    from PIL import Image

    h, w = frames.shape[1:3]
    indices, palette = _shared_palette(frames)
    images = []
    for index in indices:
        image = Image.frombytes("P", (w, h), index.tobytes())
        image.putpalette(palette.ravel().tolist())
        images.append(image)
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0,
                   optimize=True)
    return buf.getvalue()


def save_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 20.0, max_bytes: int = GIF_MAX_BYTES,
             *, min_fps: float = 8.0, min_side: int = 64) -> GifInfo:
    """Write (T, H, W, 3) uint8 frames shown at ``fps`` as a looping GIF of at most ``max_bytes`` bytes.

    Every GIF of the project is written here. Frames share one palette of at most 255 colours fitted to
    the clip's distinct colours (a clip of <= 255 colours is kept exactly; no dithering); each frame after
    the first stores only the box that changed, with unchanged pixels transparent. A frame is shown for
    1000/``fps`` ms rounded to the GIF unit of 10 ms and at least 20 ms (a clip faster than 50 fps keeps
    every k-th frame from the start, each shown k times as long). While the file is over ``max_bytes``, one change at a time, in this order, until it fits:

    1. keep every k-th frame (k = 2, 3, ...) with frame time ×k, so playback stays real time, while the
       resulting rate stays >= ``min_fps``;
    2. halve width and height (area average) while the shorter side stays >= ``min_side`` px;
    3. keep only the first n frames, n shrinking with the measured bytes per frame, down to one frame;
    4. halve width and height further, down to 1 px.

    Each step is deterministic, so the same input gives the same file. The file is written atomically
    (temporary file + rename; parent folders created). Returns what was written.

    Raises ValueError, before any work, for: a path not ending in ``.gif``; frames that are not a uint8
    array of shape (T, H, W, 3) with T, H, W >= 1; ``fps`` or ``min_fps`` not finite and > 0;
    ``max_bytes`` < ``GIF_MIN_BYTES``; ``min_side`` < 1.
    """
    path = Path(path)
    _check_gif_args(path, frames, fps, max_bytes, min_fps, min_side)
    step = max(1, math.ceil(GIF_MIN_FRAME_MS * fps / 1000.0 - 1e-9))
    halvings = 0
    count = len(frames[::step])
    while True:
        clip = _halve(frames[::step][:count], halvings)
        data = _encode_gif(clip, _frame_ms(fps, step))
        if len(data) <= max_bytes:
            break
        side = min(clip.shape[1:3])
        if fps / (step + 1) >= min_fps and len(frames[::step + 1]) > 1 and count == len(frames[::step]):
            step += 1
            count = len(frames[::step])
        elif side // 2 >= min_side and count == len(frames[::step]):
            halvings += 1
        elif count > 1:
            count = max(1, min(count - 1, int(count * max_bytes / len(data))))
        elif side > 1:
            halvings += 1
        else:
            raise RuntimeError(f"a 1×1 one-frame GIF of {len(data)} bytes exceeds max_bytes={max_bytes}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes(path, data)
    return GifInfo(path, len(data), len(clip), step, clip.shape[1], clip.shape[2], _frame_ms(fps, step))


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
