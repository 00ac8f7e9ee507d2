"""Environment steps per second, in one run: real (pixels, state), learned (keypoints, pixels)
and the vmapped vector env at several N.

    python benchmarks/env_throughput.py --checkpoint RUN_DIR [--system pendulum] [--repeats 3]

Writes benchmarks/results/env_throughput.{json,md,png}.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from _common import RESULTS, machine, write_results  # noqa: E402

import keycld_gym  # noqa: E402,F401


def single_env_rate(env, steps: int, repeats: int) -> float:
    rates = []
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, *env.action_space.shape)).astype(np.float32)
    env.step(actions[0])  # warm-up / compile
    for _ in range(repeats):
        env.reset(seed=0)
        t = time.perf_counter()
        for a in actions:
            env.step(a)
        rates.append(steps / (time.perf_counter() - t))
    return float(np.median(rates))


def vector_rate(system: str, checkpoint: str, n: int, steps: int, repeats: int) -> float:
    venv = gym.make_vec(f"KeyCLD-{system.capitalize()}-v0", num_envs=n, vectorization_mode="vector_entry_point",
                        checkpoint=checkpoint)
    venv.reset(seed=0)
    a = np.zeros(venv.action_space.shape, np.float32)
    venv.step(a)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            out = venv.step(a)
        jax.block_until_ready(out[0])
        rates.append(n * steps / (time.perf_counter() - t))
    return float(np.median(rates))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--system", default="pendulum")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    name = args.system.capitalize()
    rows, data = [], {"machine": machine(), "system": args.system, "checkpoint": args.checkpoint}
    cases = [("real env, pixels", lambda: gym.make(f"KeyCLD-{name}-Real-v0", obs_type="pixels"), 200),
             ("real env, state", lambda: gym.make(f"KeyCLD-{name}-Real-v0", obs_type="state"), 200),
             ("learned env, keypoints", lambda: gym.make(f"KeyCLD-{name}-v0", checkpoint=args.checkpoint), 1000),
             ("learned env, pixels (learned renderer)",
              lambda: gym.make(f"KeyCLD-{name}-v0", checkpoint=args.checkpoint, obs_type="pixels"), 200)]
    for label, make, steps in cases:
        rate = single_env_rate(make(), steps, args.repeats)
        data[label] = rate
        rows.append([label, "1", f"{rate:,.0f}"])
        print(label, rate, flush=True)
    vec = {}
    for n in (1, 64, 1024, 4096):
        rate = vector_rate(args.system, args.checkpoint, n, 200 if n < 1024 else 50, args.repeats)
        vec[n] = rate
        rows.append(["vector env, keypoints (one jitted vmapped step)", str(n), f"{rate:,.0f}"])
        print("vector", n, rate, flush=True)
    data["vector"] = vec
    ratio = data["learned env, pixels (learned renderer)"] / data["real env, pixels"]
    notes = (f"`python benchmarks/env_throughput.py --checkpoint {args.checkpoint} --system {args.system} "
             f"--repeats {args.repeats}`; median of {args.repeats}; random actions (zeros for the vector env). "
             f"Learned env with rendering vs real env with pixels: {ratio:.2f}×.")
    write_results("env_throughput", data, rows, ["environment", "N", "steps/s"], notes)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(list(vec), list(vec.values()), "o-", label="learned vector env (keypoints)")
    for label in ("real env, pixels", "real env, state", "learned env, keypoints"):
        ax.axhline(data[label], ls="--", lw=1, label=label, color=None)
    ax.set_xlabel("number of environments N")
    ax.set_ylabel("steps / s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "env_throughput.png", dpi=100)
    print((RESULTS / "env_throughput.md").read_text())


if __name__ == "__main__":
    main()
