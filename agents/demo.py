"""``keycld demo`` (what ``make demo`` runs): energy-shaping swing-up with the shipped models.

For each system with a shipped model (pendulum and cartpole by default) it runs the
energy-shaping controller of ``agents.energy_shaping`` once on the real simulation, fed only by
the encoder on the 64×64 frames, and once inside the learned model from the same encoded
initial state; it prints the success table and writes ``demo/<system>.gif`` with three panels:
real simulation | learned model (its renderer) | keypoints drawn on the real frames.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

DEMO_SYSTEMS = ("pendulum", "cartpole")
COLOURS = np.array([[255, 40, 40], [40, 120, 255], [40, 200, 40]], np.uint8)


def draw_keypoints(frame: np.ndarray, x: np.ndarray, radius: int = 2) -> np.ndarray:
    """Frame (64, 64, 3) uint8 with keypoints x (2K,) in image units (y up) drawn as dots."""
    out = frame.copy()
    size = frame.shape[0]
    yy, xx = np.mgrid[:size, :size]
    for k in range(x.shape[0] // 2):
        col = (x[2 * k] + 1) / 2 * (size - 1)
        row = (1 - x[2 * k + 1]) / 2 * (size - 1)
        out[(yy - row) ** 2 + (xx - col) ** 2 <= radius ** 2] = COLOURS[k % len(COLOURS)]
    return out


def _episode(env, agent, seed: int | None, options: dict | None, keypoints: bool):
    """Roll the agent; returns (frames (T, 64, 64, 3), keypoint obs (T, 4K), return, sparse (T,))."""
    from .base import sparse_keypoints, sparse_real

    base = env.unwrapped
    obs, info = env.reset(seed=seed, options=options)
    agent.reset(base, obs, info)
    frames, kps, sparse, ret = [env.render()], [obs], [], 0.0
    while True:
        obs, r, term, trunc, info = env.step(agent.act(obs, info))
        ret += r
        frames.append(env.render())
        kps.append(obs)
        sparse.append(sparse_real(base.system, base.physics) if hasattr(base, "physics")
                      else sparse_keypoints(base.system, base.state.x))
        if term or trunc:
            break
    return np.stack(frames), np.stack(kps), ret, np.asarray(sparse, bool)


def write_panels(path: Path, real: np.ndarray, learned: np.ndarray, keypoints: np.ndarray, fps: int,
                 scale: int = 3, stride: int = 2) -> None:
    """GIF of [real | learned | real + keypoints], written atomically by keycld.viz.save_gif within its
    default byte budget."""
    from keycld.viz import save_gif

    n = min(len(real), len(learned))
    overlay = [draw_keypoints(real[t], keypoints[t][: keypoints.shape[1] // 2]) for t in range(n)]
    gap = np.full((64, 2, 3), 255, np.uint8)
    panels = [np.concatenate([real[t], gap, learned[t], gap, overlay[t]], axis=1) for t in range(0, n, stride)]
    save_gif(path, np.repeat(np.repeat(np.stack(panels), scale, 1), scale, 2), fps / stride)


def run_demo(out: Path, systems=DEMO_SYSTEMS, seed: int = 0, progress: bool = True) -> list[dict]:
    import gymnasium as gym

    import keycld_gym  # noqa: F401
    from .base import success_of
    from .energy_shaping import learned_controller
    from keycld.systems import get as get_system

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for system in systems:
        t0 = time.perf_counter()
        name = system.capitalize()
        agent = learned_controller(system)
        real = gym.make(f"KeyCLD-{name}-Real-v0", obs_type="keypoints", render_mode="rgb_array")
        learned = gym.make(f"KeyCLD-{name}-v0", render_mode="rgb_array")
        real_frames, real_kp, real_ret, real_sparse = _episode(real, agent, seed, None, True)
        # the learned model starts from the real run's first encoded state
        learned_frames, _, learned_ret, learned_sparse = _episode(learned, agent, None, {"state": real_kp[0]}, False)
        dt = get_system(system).dt
        for where, ret, sparse in (("real", real_ret, real_sparse), ("learned", learned_ret, learned_sparse)):
            ok, t_up = success_of(sparse, dt)
            rows.append({"system": system, "where": where, "success": ok, "return": ret, "swing_up_s": t_up})
        gif = out / f"{system}.gif"
        write_panels(gif, real_frames, learned_frames, real_kp, int(round(1 / dt)))
        if progress:
            print(f"{system}: wrote {gif} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = ["| system | env | success | return | swing-up (s) |", "|---|---|---|---|---|"]
    for r in rows:
        up = "–" if r["swing_up_s"] is None else f"{r['swing_up_s']:.2f}"
        lines.append(f"| {r['system']} | {r['where']} | {'yes' if r['success'] else 'no'} | {r['return']:.0f} | {up} |")
    return "\n".join(lines)


def cmd_demo(args, parser) -> int:
    from keycld import rundir
    from keycld_gym.loading import MODELS_DIR

    systems = [s for s in args.systems.split(",") if s]
    bad = [s for s in systems if s not in ("pendulum", "cartpole", "acrobot")]
    if bad:
        parser.error(f"unknown systems {bad}; allowed: pendulum, cartpole, acrobot")
    missing = [s for s in systems if not rundir.is_run(MODELS_DIR / s)]
    if missing:
        print(f"no shipped model for {', '.join(missing)} yet; skipping it")
    systems = [s for s in systems if s not in missing]
    os.environ.setdefault("MUJOCO_GL", "egl")
    t0 = time.perf_counter()
    rows = run_demo(Path(args.out), systems, args.seed, progress=not args.quiet)
    table = format_rows(rows)
    print("\nEnergy-shaping swing-up with the shipped models (real: from 64×64 pixels; learned: inside "
          "the learned model)\n" + table)
    (Path(args.out) / "results.md").write_text(table + "\n")
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; GIFs in {args.out}/ "
          "(real | learned | keypoints on the real frames)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="the demo on shipped defaults (make demo): swing-up, real and learned")
    p.add_argument("--out", default="demo")
    p.add_argument("--systems", default=",".join(DEMO_SYSTEMS), help="comma-separated, default pendulum,cartpole")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo, parser=p)
