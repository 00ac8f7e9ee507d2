"""Environment steps per second, in one run: real (pixels, state), learned (keypoints, pixels),
the Gymnasium vector env's ``step()`` at several N, the functional core in a jitted ``lax.scan``
at N = 4096 for the three shipped models (4 RK4 sub-steps and the measured choice,
``keycld_gym.functional.choose_substeps``), and gymnax's analytic Pendulum-v1 as the anchor
(when gymnax is installed).

    python benchmarks/env_throughput.py [--checkpoint RUN_DIR] [--system pendulum] [--repeats 3]

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
from _common import RESULTS, machine, median_time, write_results  # noqa: E402

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


def core_rate(params, n: int, steps: int, repeats: int) -> float:
    """Env steps/s of the functional core: ``steps`` vmapped steps of ``n`` envs in one jitted scan,
    random actions drawn inside the scan."""
    from keycld_gym import functional as F

    a_dim = params.model.system.action_dim

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        states = jax.vmap(F.reset, in_axes=(0, None))(jax.random.split(k0, n), params)

        def body(s, k):
            a = jax.random.uniform(k, (n, a_dim), minval=-1.0, maxval=1.0)
            s, _, r, _, _ = jax.vmap(F.step, in_axes=(0, 0, None))(s, a, params)
            return s, r.sum()
        return jax.lax.scan(body, states, jax.random.split(k1, steps))[1]

    jax.block_until_ready(run(jax.random.PRNGKey(0)))
    seconds, _ = median_time(lambda: jax.block_until_ready(run(jax.random.PRNGKey(1))), repeats)
    return n * steps / seconds


def gymnax_rate(n: int, steps: int, repeats: int) -> float | None:
    """Env steps/s of gymnax's Pendulum-v1 under the same scan (None without gymnax)."""
    try:
        import gymnax
    except ImportError:
        return None
    env, env_params = gymnax.make("Pendulum-v1")

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        _, states = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k0, n), env_params)

        def body(s, k):
            ka, ks = jax.random.split(k)
            a = jax.random.uniform(ka, (n, 1), minval=-2.0, maxval=2.0)
            out = jax.vmap(env.step, in_axes=(0, 0, 0, None))(jax.random.split(ks, n), s, a, env_params)
            return out[1], out[2].sum()  # (obs, state, reward, ...)
        return jax.lax.scan(body, states, jax.random.split(k1, steps))[1]

    jax.block_until_ready(run(jax.random.PRNGKey(0)))
    seconds, _ = median_time(lambda: jax.block_until_ready(run(jax.random.PRNGKey(1))), repeats)
    return n * steps / seconds


def core_rows(repeats: int, n: int = 4096, steps: int = 50) -> tuple[list[list[str]], dict]:
    from keycld_gym import functional as F
    from keycld_gym.loading import load_env_params

    rows, data = [], {}
    for system in ("pendulum", "cartpole", "acrobot"):
        params, _ = load_env_params(system)
        chosen, errors = F.choose_substeps(params)
        for substeps in sorted({4, chosen}):
            rate = core_rate(params.replace(substeps=substeps), n, steps, repeats)
            data[f"core {system} substeps {substeps}"] = rate
            rows.append([f"functional core in lax.scan, shipped {system}, RK4 × {substeps}"
                         + (f" (chosen: error {errors[chosen]:.1e})" if substeps == chosen else ""),
                         str(n), f"{rate:,.0f}"])
            print(rows[-1], flush=True)
    rate = gymnax_rate(n, steps, repeats)
    if rate is not None:
        data["gymnax Pendulum-v1"] = rate
        rows.append(["gymnax Pendulum-v1 (analytic anchor), same scan", str(n), f"{rate:,.0f}"])
        print(rows[-1], flush=True)
    return rows, data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None, help="run or export directory (default: the shipped model)")
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
    more_rows, more = core_rows(args.repeats)
    rows += more_rows
    data.update(more)
    ratio = data["learned env, pixels (learned renderer)"] / data["real env, pixels"]
    cmd_ckpt = f" --checkpoint {args.checkpoint}" if args.checkpoint else ""
    notes = (f"`python benchmarks/env_throughput.py{cmd_ckpt} --system {args.system} "
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
    from keycld.viz import save_figure
    save_figure(RESULTS / "env_throughput.png", fig)
    print((RESULTS / "env_throughput.md").read_text())


if __name__ == "__main__":
    main()
