"""keycld.viz.save_gif (the one GIF writer: shared palette, byte budget, real-time playback, atomic),
benchmarks/shrink_media.py (re-encodes GIFs in place) and the size of the repository's tracked media."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from keycld.viz import GIF_MAX_BYTES, GIF_MIN_BYTES, save_gif

ROOT = Path(__file__).resolve().parent.parent


def noise(t: int = 24, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """Uniform random RGB frames: no two pixels alike, the worst case for GIF compression."""
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def moving_square(t: int = 12, h: int = 40, w: int = 48) -> np.ndarray:
    """Frames with three colours and a square that moves one pixel per frame (every frame differs)."""
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 2] = 90
    for i in range(t):
        frames[i, 10:20, 5 + i:15 + i] = (250, 120, 10)
    return frames


def durations_ms(path: Path) -> list[int]:
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(im.info["duration"])
    return out


def test_small_clip_is_written_exactly(tmp_path):
    frames = moving_square()
    info = save_gif(tmp_path / "sub" / "clip.gif", frames, fps=20)
    back = iio.imread(tmp_path / "sub" / "clip.gif", index=None)[..., :3]
    assert back.shape == frames.shape
    np.testing.assert_array_equal(back, frames)  # <= 255 colours: kept exactly
    assert durations_ms(info.path) == [50] * len(frames)
    assert (info.frames, info.step, info.height, info.width, info.frame_ms) == (12, 1, 40, 48, 50)
    assert info.nbytes == info.path.stat().st_size
    assert [p.name for p in info.path.parent.iterdir()] == ["clip.gif"]  # no temporary file left


def test_noise_fits_the_budget_and_the_budget_matters(tmp_path):
    frames = noise()
    budget = 40_000
    free = save_gif(tmp_path / "free.gif", frames, fps=25, max_bytes=10**9)
    assert free.nbytes > 2 * budget and free.frames == len(frames)  # unconstrained: far over the budget
    info = save_gif(tmp_path / "fit.gif", frames, fps=25, max_bytes=budget)
    assert info.nbytes == (tmp_path / "fit.gif").stat().st_size <= budget
    back = iio.imread(tmp_path / "fit.gif", index=None)
    assert back.shape[0] == info.frames >= 1 and back.shape[1:3] == (info.height, info.width)
    # every 3rd frame at 8.3 fps (120 ms each, real time), then fewer frames, never below 64 px
    assert info.step == 3 and info.frame_ms == 120 and info.height == 64 and info.frames < len(frames) // 3
    assert set(durations_ms(info.path)) == {120}


def test_tiny_budget_shrinks_frames(tmp_path):
    info = save_gif(tmp_path / "tiny.gif", noise(t=3, h=96, w=96), fps=10, max_bytes=GIF_MIN_BYTES)
    assert info.nbytes <= GIF_MIN_BYTES and info.frames == 1 and info.height < 64
    assert iio.imread(info.path, index=None).shape[1:3] == (info.height, info.width)


def test_halving_comes_before_shortening(tmp_path):
    frames = np.repeat(np.repeat(noise(t=16, h=32, w=32), 4, axis=1), 4, axis=2)  # 128 px, 4× upscaled
    full = save_gif(tmp_path / "full.gif", frames, fps=10, max_bytes=10**9)
    info = save_gif(tmp_path / "half.gif", frames, fps=10, max_bytes=full.nbytes // 2)
    assert (info.step, info.height, info.width, info.frames) == (1, 64, 64, 16)
    assert info.nbytes <= full.nbytes // 2


def test_fast_clip_keeps_real_time(tmp_path):
    frames = moving_square(t=12)
    info = save_gif(tmp_path / "fast.gif", frames, fps=100)
    assert info.step == 2 and info.frame_ms == 20 and info.frames == 6
    np.testing.assert_array_equal(iio.imread(info.path, index=None)[..., :3], frames[::2])


def test_same_input_gives_the_same_file(tmp_path):
    a = save_gif(tmp_path / "a.gif", noise(t=10), fps=20, max_bytes=30_000)
    b = save_gif(tmp_path / "b.gif", noise(t=10), fps=20, max_bytes=30_000)
    assert a.path.read_bytes() == b.path.read_bytes()


@pytest.mark.parametrize("kwargs, match", [
    ({"frames": np.zeros((4, 8, 8, 3), np.float32)}, "uint8"),
    ({"frames": [[[[0, 0, 0]]]]}, "uint8"),
    ({"frames": np.zeros((8, 8, 3), np.uint8)}, r"\(T, H, W, 3\)"),
    ({"frames": np.zeros((4, 8, 8, 4), np.uint8)}, r"\(T, H, W, 3\)"),
    ({"frames": np.zeros((0, 8, 8, 3), np.uint8)}, "at least one frame"),
    ({"frames": np.zeros((2, 0, 8, 3), np.uint8)}, "at least one frame"),
    ({"max_bytes": 1000}, f"max_bytes must be an integer >= {GIF_MIN_BYTES}"),
    ({"max_bytes": 5e5}, "max_bytes"),
    ({"fps": 0}, "fps must be"),
    ({"fps": float("nan")}, "fps must be"),
    ({"min_fps": -1.0}, "min_fps"),
    ({"min_side": 0}, "min_side"),
    ({"name": "clip.png"}, r"must end in \.gif"),
])
def test_bad_input_raises_and_keeps_the_old_file(tmp_path, kwargs, match):
    path = tmp_path / kwargs.pop("name", "clip.gif")
    path.write_bytes(b"old")
    args = {"frames": moving_square(t=2), "fps": 20.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        save_gif(path, **args)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_default_budget_is_300_kb(tmp_path):
    frames = noise(t=60)  # ~6 KB a frame: ~360 KB in all
    info = save_gif(tmp_path / "default.gif", frames, fps=5)
    assert GIF_MAX_BYTES == 300_000 and info.nbytes <= 300_000 and 30 < info.frames < 60


@pytest.fixture(scope="module")
def shrink_media():
    spec = importlib.util.spec_from_file_location("bench_shrink_media", ROOT / "benchmarks" / "shrink_media.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shrink_media_keeps_timing_and_fits(tmp_path, shrink_media, capsys):
    frames = moving_square(t=5)
    images = [Image.fromarray(f) for f in frames]
    src = tmp_path / "old.gif"  # frame times 40, 120, 40, 80, 40 ms: on a 40 ms grid, 8 frames
    images[0].save(src, save_all=True, append_images=images[1:], duration=[40, 120, 40, 80, 40], loop=0)
    uniform, fps = shrink_media.read_gif(src)
    assert fps == 25.0 and len(uniform) == 8
    np.testing.assert_array_equal(uniform[[0, 1, 2, 3, 4, 5, 6, 7]], frames[[0, 1, 1, 1, 2, 3, 3, 4]])
    big = tmp_path / "big.gif"
    save_gif(big, noise(t=20), fps=20, max_bytes=10**9)
    old_size = big.stat().st_size
    assert shrink_media.main([str(src), str(big), "--max_bytes", "30000"]) == 0
    assert big.stat().st_size <= 30_000 < old_size
    assert durations_ms(src) == [40, 120, 40, 80, 40]  # identical frames merged back, same timing
    assert f"{old_size} -> {big.stat().st_size} bytes" in capsys.readouterr().out


def test_shrink_media_rejects_bad_arguments(tmp_path, shrink_media):
    (tmp_path / "a.txt").write_text("x")
    for argv in ([], [str(tmp_path / "a.txt")], [str(tmp_path / "missing.gif")],
                 ["--tracked", str(tmp_path / "a.txt")], ["--tracked", "--max_bytes", "100"]):
        with pytest.raises(SystemExit):
            shrink_media.main(argv)
    assert (tmp_path / "a.txt").read_text() == "x"


def test_tracked_media_is_small():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z", "*.gif", "*.png"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("git ls-files failed: " + listed.stderr.decode())
    paths = [ROOT / p for p in listed.stdout.decode().split("\0") if p]
    sizes = {p.relative_to(ROOT).as_posix(): p.stat().st_size for p in paths if p.exists()}
    assert sizes, "no tracked GIF or PNG found"
    assert sum(sizes.values()) <= 10_000_000, f"tracked GIF + PNG total {sum(sizes.values())} bytes"
    big = {p: s for p, s in sizes.items() if p.endswith(".gif") and s > GIF_MAX_BYTES}
    assert not big, f"tracked GIFs over {GIF_MAX_BYTES} bytes: {big}"
