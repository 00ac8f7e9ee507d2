"""Training throughput of the full KeyCLD loss (forward + backward + Adam), in one run.

    python benchmarks/train_step.py [--repeats 5]

Rows: pendulum and cartpole at the paper's configuration (h = 32, 50 frames, batch 1, Euler,
4 predicted steps), the --preset cpu width (h = 16), the plain U-Net computation (same
function, no SplitConv) as an in-run baseline, and each with and without the XLA flag
(KEYCLD_NO_XLA_FLAGS=1 in a subprocess, since the flag must be set before jax starts).
The paper code's step times (``ORIGINAL_STEP_S``: pendulum 2.15 s, cartpole 2.05 s per 50-frame
step at h = 32; pendulum 0.64 s at h = 16) are constants for this machine type that this script
does not measure; where they come from: benchmarks/results/history/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# seconds per 50-frame training step of the paper's code on this machine type, per (system, h)
ORIGINAL_STEP_S = {("pendulum", 32): 2.15, ("cartpole", 32): 2.05, ("pendulum", 16): 0.64}
FLOP_BOUND_FPS = 110.0  # 3.4 GFLOP per frame fwd+bwd at 387 GFLOP/s (plain architecture)


def step_inputs(num_actions: int):
    """The benchmark batch: frames (1, 50, 64, 64, 3) uint8 and actions (1, num_actions) float32,
    fixed random values (seed 0)."""
    import numpy as np

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (1, 50, 64, 64, 3), dtype=np.uint8)
    return frames, rng.uniform(-2, 2, (1, num_actions)).astype(np.float32)


def measure(environment: str, hidden: int, fast: bool, repeats: int) -> dict:
    import time

    import jax
    import numpy as np

    from keycld.config import TrainConfig
    from keycld.model.keycld import KeyCLD
    from keycld.train import init_state, make_train_step

    cfg = TrainConfig(environment=environment, num_hidden_dim=hidden)
    model = KeyCLD.from_config(cfg)
    import dataclasses
    model = dataclasses.replace(model, fast_convs=fast)
    import keycld.train as T
    state = init_state(cfg, model)
    step = T.make_train_step(cfg, model)
    frames, act = step_inputs(model.num_actions)
    t = time.perf_counter()
    state, m = step(state, frames, act)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        state, m = step(state, frames, act)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    med = float(np.median(times))
    return dict(environment=environment, hidden=hidden, fast=fast, compile_s=compile_s, step_s=med,
                times_s=times, frames_per_s=50 / med, epoch_s=450 * med)


def child(args) -> None:
    out = [measure(e, h, f, args.repeats) for e, h, f in json.loads(args.child)]
    print("RESULT " + json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        return child(args)
    from _common import machine, write_results

    cases = [("pendulum", 32, True), ("pendulum", 32, False), ("cartpole", 32, True), ("pendulum", 16, True)]
    rows, data = [], {"machine": machine(), "results": []}
    for flag in (True, False):
        env = dict(os.environ)
        if flag:
            env.pop("KEYCLD_NO_XLA_FLAGS", None)
        else:
            env["KEYCLD_NO_XLA_FLAGS"] = "1"
        cmd = [sys.executable, __file__, "--repeats", str(args.repeats), "--child", json.dumps(cases)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [l for l in res.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            raise RuntimeError(res.stderr[-3000:])
        for r in json.loads(line[0][7:]):
            r["xla_flag"] = flag
            data["results"].append(r)
    for r in data["results"]:
        orig = ORIGINAL_STEP_S.get((r["environment"], r["hidden"]))
        rows.append([r["environment"], str(r["hidden"]), "SplitConv" if r["fast"] else "plain U-Net",
                     "on" if r["xla_flag"] else "off", f"{r['step_s']:.3f}", f"{r['frames_per_s']:.1f}",
                     f"{r['epoch_s'] / 60:.1f}",
                     f"{orig / r['step_s']:.2f}×" if orig else "",
                     f"{r['frames_per_s'] / FLOP_BOUND_FPS:.0%}" if r["hidden"] == 32 else ""])
    notes = (f"`python benchmarks/train_step.py --repeats {args.repeats}`: median of {args.repeats} jitted steps "
             "(one 50-frame sequence, loss forward + backward + Adam). 'vs original' divides the original "
             "code's step time on this machine type for the same system (the ORIGINAL_STEP_S constants: pendulum 2.15 s at h=32 and "
             "0.64 s at h=16, cartpole 2.05 s at h=32) by ours. "
             "'of bound' = frames/s over the ~110 frames/s FLOP bound of the plain architecture (3.4 GFLOP "
             "per frame at 387 GFLOP/s).")
    md = write_results("train_step", data, rows,
                       ["system", "h", "U-Net", "XLA flag", "step s", "frames/s", "epoch min (450 steps)",
                        "vs original", "of bound"], notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
