"""Re-encode GIFs and PNGs in place so the repository's media stay small.

    python benchmarks/shrink_media.py --tracked                # every GIF and PNG git tracks
    python benchmarks/shrink_media.py a.gif b.png [--max_bytes 120000]

A GIF is read with imageio (frames as displayed, each frame's duration from its metadata), put back
on a uniform timeline (a frame shown for n base durations is repeated n times, the base being the
greatest common divisor of the durations) and written through ``keycld.viz.save_gif`` with the
budget ``--max_bytes``: a shared palette, frame differencing and, when over the budget, fewer frames
per second (real-time playback kept), smaller frames or a shorter clip. The default budget keeps the
~60 result GIFs of ``benchmarks/results`` under 10 MB together.

A PNG is rewritten with Pillow's ``optimize``; a fully opaque one as a 256-colour palette image
(median cut, no dithering), whose largest and mean colour change per channel are printed. A PNG is
replaced only when the new file is smaller.

Prints one line per file: old size, new size, and what the GIF kept (frames, size, frame time).
"""
from __future__ import annotations

import io
import math
import subprocess
import sys
from functools import reduce
from pathlib import Path

import numpy as np

from keycld import fileio
from keycld.cliutil import StrictParser, positive_int
from keycld.viz import GIF_MIN_BYTES, save_gif

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAX_BYTES = 120_000


def read_gif(path: Path) -> tuple[np.ndarray, float]:
    """(T, H, W, 3) uint8 frames of a GIF on a uniform timeline and its frame rate (frames/s)."""
    import imageio.v3 as iio

    frames = iio.imread(path, index=None)
    if frames.ndim == 3:  # a one-frame GIF reads as (H, W, C)
        frames = frames[None]
    with iio.imopen(path, "r") as f:
        durations = [f.metadata(index=i).get("duration") for i in range(len(frames))]
    bad = [(i, d) for i, d in enumerate(durations) if not isinstance(d, (int, float)) or d <= 10]
    if bad:
        i, d = bad[0]
        raise ValueError(f"{path}: frame {i} has duration {d!r} ms; players show delays of 10 ms or less "
                         "at 100 ms, so the intended speed is unknown")
    ms = [int(round(d)) for d in durations]
    base = reduce(math.gcd, ms)
    repeats = np.asarray([d // base for d in ms])
    return np.repeat(frames[..., :3], repeats, axis=0), 1000.0 / base


def shrink_gif(path: Path, max_bytes: int) -> str:
    """Re-encode one GIF in place through save_gif; a line saying what changed."""
    old = path.stat().st_size
    frames, fps = read_gif(path)
    info = save_gif(path, frames, fps, max_bytes)
    return (f"{path}: {old} -> {info.nbytes} bytes; {info.frames} of {len(frames)} frames at "
            f"{1000 / info.frame_ms:.3g} fps ({info.seconds:.1f} s), {info.width}×{info.height} px")


def shrink_png(path: Path) -> str:
    """Rewrite one PNG smaller (see the module docstring); a line saying what changed."""
    from PIL import Image

    old = path.stat().st_size
    with Image.open(path) as im:
        im.load()
    pixels = np.asarray(im.convert("RGBA"))
    note = "lossless"
    if (pixels[..., 3] == 255).all():
        rgb = pixels[..., :3]
        im = Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        change = np.abs(np.asarray(im.convert("RGB")).astype(np.int16) - rgb)
        note = f"256 colours, colour change max {change.max()} mean {change.mean():.3f} of 255"
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    data = buf.getvalue()
    if len(data) >= old:
        return f"{path}: {old} bytes kept (re-encoding gave {len(data)})"
    fileio.write_bytes(path, data)
    return f"{path}: {old} -> {len(data)} bytes ({note})"


def tracked_media(root: Path = ROOT) -> list[Path]:
    """The GIF and PNG files git tracks under ``root``."""
    out = subprocess.run(["git", "ls-files", "-z", "*.gif", "*.png"], cwd=root, check=True,
                         capture_output=True).stdout
    return [root / p for p in out.decode().split("\0") if p]


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="*", type=Path, help=".gif or .png files to re-encode in place")
    p.add_argument("--tracked", action="store_true", help="every GIF and PNG tracked by git")
    p.add_argument("--max_bytes", type=positive_int, default=DEFAULT_MAX_BYTES,
                   help=f"byte budget of each GIF (default {DEFAULT_MAX_BYTES}, at least {GIF_MIN_BYTES})")
    args = p.parse_args(argv)
    if args.tracked == bool(args.paths):
        p.error("give either paths or --tracked")
    if args.max_bytes < GIF_MIN_BYTES:
        p.error(f"--max_bytes must be at least {GIF_MIN_BYTES}, got {args.max_bytes}")
    paths = tracked_media() if args.tracked else args.paths
    for path in paths:
        if path.suffix.lower() not in (".gif", ".png"):
            p.error(f"{path}: only .gif and .png files are re-encoded")
        if not path.is_file():
            p.error(f"{path}: no such file")
    before = sum(path.stat().st_size for path in paths)
    for path in paths:
        print(shrink_gif(path, args.max_bytes) if path.suffix.lower() == ".gif" else shrink_png(path), flush=True)
    after = sum(path.stat().st_size for path in paths)
    print(f"total: {before} -> {after} bytes in {len(paths)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
