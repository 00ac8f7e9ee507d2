"""Dataset generation speed (single process vs parallel, same run) and cache load time.

    python benchmarks/data_generation.py [--runs 40] [--repeats 3] [--environment pendulum]

Writes benchmarks/results/data_generation.{json,md}. Frames counted = runs × 50 + the 256
frames of the potential grid; both settings produce bit-identical arrays (checked).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from _common import machine, median_time, write_results  # noqa: E402

from keycld.data import DatasetConfig, generate, load_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--environment", default="pendulum")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--child_single", nargs=2, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--full_cache_dir", default=None,
                    help="cache holding (or to hold) the full 500-run dataset for the load timing")
    args = ap.parse_args()
    if args.child_single:
        cfg = DatasetConfig(args.child_single[1], "random", "yes", num_runs=int(args.child_single[0]), num_frames=50)
        t = time.perf_counter()
        generate(cfg, workers=1, progress=False)
        print(time.perf_counter() - t)
        return

    cfg = DatasetConfig(args.environment, "random", "yes", num_runs=args.runs, num_frames=50)
    frames = args.runs * 50 + 256
    out = {}
    ref = {}
    for label, workers in (("single", 1), ("parallel", args.workers)):
        def run():
            ref[label] = generate(cfg, workers=workers, progress=False)
        med, times = median_time(run, args.repeats)
        out[label] = dict(workers=workers, median_s=med, times_s=times, frames_per_s=frames / med)
        print(label, out[label])
    for k in ref["single"]:
        assert np.array_equal(ref["single"][k], ref["parallel"][k]), k
    speedup = out["parallel"]["frames_per_s"] / out["single"]["frames_per_s"]
    # one process restricted to one llvmpipe thread, as each parallel worker is
    times = [float(subprocess.run([sys.executable, __file__, "--child_single", str(args.runs), args.environment],
                                  env={**os.environ, "LP_NUM_THREADS": "1"}, capture_output=True, text=True,
                                  check=True).stdout.split()[-1]) for _ in range(args.repeats)]
    med1 = float(np.median(times))
    out["single_1_thread"] = dict(workers=1, median_s=med1, times_s=times, frames_per_s=frames / med1)
    print("single, LP_NUM_THREADS=1", out["single_1_thread"])

    full = DatasetConfig(args.environment, "random", "yes")
    cache = Path(args.full_cache_dir) if args.full_cache_dir else Path(tempfile.mkdtemp(prefix="keycld-bench-"))
    cached = (cache / full.name / "manifest.json").exists()
    t = time.perf_counter()
    load_dataset(full, cache_dir=cache, workers=args.workers, progress=True)
    first = None if cached else time.perf_counter() - t
    load_med, load_times = median_time(lambda: load_dataset(full, cache_dir=cache, progress=False), args.repeats)
    size_mb = (cache / full.name / "data.npz").stat().st_size / 1e6
    data = dict(machine=machine(), environment=args.environment, runs=args.runs, generation=out,
                parallel_speedup=speedup, full_dataset=dict(first_call_s=first, load_median_s=load_med,
                                                            load_times_s=load_times, npz_mb=size_mb))
    table = [["generation, 1 process (default: llvmpipe rasterises on all cores)", f"{out['single']['frames_per_s']:.1f} frames/s", "1.00×"],
             [f"generation, {args.workers} processes (1 llvmpipe thread each)",
              f"{out['parallel']['frames_per_s']:.1f} frames/s", f"{speedup:.2f}×"],
             ["generation, 1 process with LP_NUM_THREADS=1",
              f"{out['single_1_thread']['frames_per_s']:.1f} frames/s",
              f"parallel = {out['parallel']['frames_per_s'] / out['single_1_thread']['frames_per_s']:.2f}× this"],
             ["load cached 500-run dataset (hash check + npz)", f"{load_med:.2f} s", f"{size_mb:.1f} MB on disk"],
             ["first call (generate 500 runs, parallel)",
              "already cached" if first is None else f"{first:.0f} s", ""]]
    md = write_results("data_generation", data, table, ["what", "measured", "ratio / note"],
                       notes=f"`python benchmarks/data_generation.py --runs {args.runs} --repeats {args.repeats}` "
                             f"({args.environment}, 50 frames per run, median of {args.repeats}).")
    print(md.read_text())


if __name__ == "__main__":
    main()
