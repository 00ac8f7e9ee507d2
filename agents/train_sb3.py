"""Train a stable-baselines3 agent inside the learned model (or on the real task), judge it on the real task.

    python agents/train_sb3.py --algo sac --env KeyCLD-Pendulum-v0 --timesteps 200000
    python agents/train_sb3.py --algo sac --env KeyCLD-Pendulum-Real-v0 --timesteps 20000
    python agents/train_sb3.py --algo sac --env KeyCLD-Pendulum-v0 --compare --wall_clock_s 1200 \\
        --timesteps 100000000

A learned id (``KeyCLD-X-v0``) trains on the jitted, vmapped learned environment through
``keycld_gym.vector.sb3_vec_env`` (``--num_envs`` copies): zero real-simulation samples. A real
id (``KeyCLD-X-Real-v0``) trains on MuJoCo with ``obs_type="keypoints"`` (the trained encoder on
the rendered 64×64 frames, the observation layout of the learned env) in a ``DummyVecEnv`` of 1.

While training, every ``--eval_every_s`` seconds of *training* wall clock (and at the start and
the end) the current policy runs ``--curve_episodes`` deterministic episodes on the real env
(keypoint observations); a row ``{wall_clock_s, train_timesteps, real_sim_samples,
real_return_mean, ...}`` goes to ``OUT/curve.jsonl``. ``wall_clock_s`` counts training only: the
time spent in these evaluations is excluded (``eval_time_s`` reports it; ``cpu_s`` is this
process's CPU time of training, the fairer clock on a shared machine), and evaluation episodes
are not counted in ``real_sim_samples`` (the real-simulation transitions the learner trained on).
``--wall_clock_s`` stops training once that much training time has passed; ``--clock cpu``
measures both that budget and ``--eval_every_s`` in process CPU seconds instead (for a machine
where other jobs take the cores, or renice this one).

Writes ``OUT/model.zip`` (``model.save``), ``OUT/config.json``, ``OUT/curve.jsonl``,
``OUT/curve.png`` (real return against wall clock and against real samples), and the final
real-env evaluation (``agents.evaluate.evaluate``): ``results.json``, ``results.md``,
``best.gif``, ``worst.gif``. ``--compare`` trains the same algorithm once in the learned env
and once on the real env for the same ``--wall_clock_s`` and writes ``comparison.png`` and
``comparison.md`` next to the two run folders.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file (python agents/train_sb3.py)
    import runpy, sys  # noqa: E401  # rerun as the package module, so relative imports work
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    runpy.run_module("agents.train_sb3", run_name="__main__", alter_sys=True)
    raise SystemExit(0)

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ALGOS = ("sac", "ppo", "td3")
SYSTEM_NAMES = {"Pendulum": "pendulum", "Cartpole": "cartpole", "Acrobot": "acrobot"}
EVAL_SEED = 1000  # final evaluation: seeds EVAL_SEED … EVAL_SEED + eval_episodes − 1
CURVE_SEED = 2000  # learning-curve evaluations: the same seeds every time
CLOCKS = ("wall", "cpu")
TIME_KEYS = {"wall": "wall_clock_s", "cpu": "cpu_s"}  # curve.jsonl column of each clock


def parse_env_id(env_id: str) -> tuple[str, bool]:
    """``KeyCLD-Pendulum-v0`` -> ("pendulum", False); ``KeyCLD-Pendulum-Real-v0`` -> ("pendulum", True)."""
    allowed = [f"KeyCLD-{n}-v0" for n in SYSTEM_NAMES] + [f"KeyCLD-{n}-Real-v0" for n in SYSTEM_NAMES]
    parts = env_id.split("-") if isinstance(env_id, str) else []
    if env_id not in allowed:
        raise ValueError(f"unknown env {env_id!r}; allowed: {', '.join(allowed)}")
    return SYSTEM_NAMES[parts[1]], parts[2] == "Real"


def real_env(system: str, checkpoint=None, record: bool = False, max_steps: int | None = None):
    """The real task with keypoint observations (what a policy trained in the learned env sees)."""
    import gymnasium as gym

    import keycld_gym  # noqa: F401  (registers the ids)

    kw = {"max_episode_steps": max_steps} if max_steps is not None else {}
    return gym.make(f"KeyCLD-{system.capitalize()}-Real-v0", obs_type="keypoints", checkpoint=checkpoint,
                    render_mode="rgb_array" if record else None, **kw)


def make_train_env(system: str, real: bool, num_envs: int, checkpoint=None, seed: int = 0,
                   env_kwargs: dict | None = None):
    """An SB3 VecEnv: the learned vector env (``num_envs`` copies; ``env_kwargs`` such as
    ``bank_size``, ``integrator`` go to it) or the real env (1 copy)."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    if real:
        return DummyVecEnv([lambda: Monitor(real_env(system, checkpoint))])
    from keycld_gym.vector import sb3_vec_env

    return VecMonitor(sb3_vec_env(system, num_envs, checkpoint=checkpoint, seed=seed, **(env_kwargs or {})))


def make_model(algo: str, env, seed: int = 0, net_arch: list[int] | None = None, **algo_kwargs):
    """A fresh SB3 model with this module's defaults (TD3 gets Gaussian action noise σ = 0.1;
    PPO collects ~2048 transitions per rollout whatever ``num_envs``)."""
    from stable_baselines3 import PPO, SAC, TD3

    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; allowed: {', '.join(ALGOS)}")
    kw: dict[str, Any] = {}
    if algo == "td3":
        from stable_baselines3.common.noise import NormalActionNoise
        a = env.action_space.shape[-1]
        kw["action_noise"] = NormalActionNoise(np.zeros(a), 0.1 * np.ones(a))
    if algo == "ppo":
        kw["n_steps"] = max(16, 2048 // env.num_envs)
    if net_arch is not None:
        kw["policy_kwargs"] = {"net_arch": list(net_arch)}
    kw.update(algo_kwargs)
    cls = {"sac": SAC, "ppo": PPO, "td3": TD3}[algo]
    return cls("MlpPolicy", env, seed=seed, verbose=0, device="cpu", **kw)


class SB3Agent:
    """``agents.base.Agent`` around an SB3 model: the deterministic action of the policy."""

    def __init__(self, model):
        self.model = model
        self.shape = model.action_space.shape

    def reset(self, env, obs, info) -> None:
        pass

    def act(self, obs, info) -> np.ndarray:
        action, _ = self.model.predict(np.asarray(obs, np.float32), deterministic=True)
        return np.clip(np.asarray(action, np.float32).reshape(self.shape), -1.0, 1.0)


def _callbacks():
    """The callback classes (defined lazily: importing this module does not import SB3)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class RealCurve(BaseCallback):
        """Training-time budget; periodic deterministic evaluation on the real env.

        ``clock()`` is the wall clock since training started minus the time spent evaluating,
        ``cpu()`` the same in process CPU time; ``budget()`` is the one ``clock_kind`` names.
        """

        def __init__(self, evaluate_fn: Callable[[Any], list[float]], path: Path, real_training: bool,
                     eval_every_s: float | None, wall_clock_s: float | None, clock_kind: str = "wall"):
            super().__init__()
            self.evaluate_fn, self.path, self.real_training = evaluate_fn, path, real_training
            self.eval_every_s, self.wall_clock_s, self.clock_kind = eval_every_s, wall_clock_s, clock_kind
            self.rows: list[dict[str, Any]] = []
            self.stopped_by_clock = False

        def clock(self) -> float:
            return time.perf_counter() - self.t0 - self.eval_time

        def cpu(self) -> float:
            """Process CPU seconds of training (evaluation excluded): a shared machine's fair share."""
            return time.process_time() - self.cpu0 - self.eval_cpu

        def budget(self) -> float:
            return self.cpu() if self.clock_kind == "cpu" else self.clock()

        def _on_training_start(self) -> None:
            self.t0, self.eval_time = time.perf_counter(), 0.0
            self.cpu0, self.eval_cpu = time.process_time(), 0.0
            self.next_eval = self.eval_every_s
            self.path.write_text("")
            self._evaluate()

        def _evaluate(self) -> None:
            wall, cpu = self.clock(), self.cpu()
            t, c = time.perf_counter(), time.process_time()
            rets = self.evaluate_fn(self.model)
            self.eval_time += time.perf_counter() - t
            self.eval_cpu += time.process_time() - c
            train_eps = [ep["r"] for ep in self.model.ep_info_buffer or []]
            row = {"wall_clock_s": round(wall, 2), "cpu_s": round(cpu, 2),
                   "train_timesteps": int(self.num_timesteps),
                   "real_sim_samples": int(self.num_timesteps) if self.real_training else 0,
                   "real_return_mean": float(np.mean(rets)), "real_return_std": float(np.std(rets)),
                   "real_episodes": len(rets), "eval_time_s": round(self.eval_time, 2),
                   "train_return_mean": float(np.mean(train_eps)) if train_eps else None}
            self.rows.append(row)
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            from tqdm import tqdm
            tqdm.write(f"[curve] {row['wall_clock_s']:.0f}s train ({row['cpu_s']:.0f} CPU s), "
                       f"{row['train_timesteps']} steps, "
                       f"real return {row['real_return_mean']:.1f} ± {row['real_return_std']:.1f}"
                       + (f", train-env return {row['train_return_mean']:.1f}" if train_eps else ""))

        def _on_step(self) -> bool:
            if self.eval_every_s is not None and self.budget() >= self.next_eval:
                self._evaluate()
                while self.next_eval <= self.budget():
                    self.next_eval += self.eval_every_s
            if self.wall_clock_s is not None and self.budget() >= self.wall_clock_s:
                self.stopped_by_clock = True
                return False
            return True

        def _on_training_end(self) -> None:
            if self.rows[-1]["train_timesteps"] != self.num_timesteps:
                self._evaluate()

    class Progress(BaseCallback):
        """tqdm bar over timesteps, or over training seconds when a wall-clock budget is set."""

        def __init__(self, total_timesteps: int, curve: RealCurve):
            super().__init__()
            self.total, self.curve = total_timesteps, curve

        def _on_training_start(self) -> None:
            from tqdm import tqdm
            by_clock = self.curve.wall_clock_s is not None
            self.bar = tqdm(total=int(self.curve.wall_clock_s) if by_clock else self.total,
                            unit=f"{self.curve.clock_kind} s" if by_clock else "step", desc="train",
                            dynamic_ncols=True)

        def _on_step(self) -> bool:
            done = int(self.curve.budget()) if self.curve.wall_clock_s is not None else self.num_timesteps
            if done > self.bar.n:
                self.bar.update(min(done, self.bar.total) - self.bar.n)
                self.bar.set_postfix(steps=self.num_timesteps, refresh=False)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return RealCurve, Progress


def curve_returns(system: str, checkpoint, episodes: int, max_steps: int | None) -> Callable[[Any], list[float]]:
    """model -> real-env returns of ``episodes`` deterministic episodes (seeds CURVE_SEED …)."""
    from .base import run_episode

    env = real_env(system, checkpoint, max_steps=max_steps)
    return lambda model: [run_episode(env, SB3Agent(model), CURVE_SEED + i).ret for i in range(episodes)]


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def train(algo: str, env_id: str, timesteps: int, out: Path, num_envs: int = 16, checkpoint=None,
          seed: int = 0, eval_episodes: int = 10, curve_episodes: int = 2, eval_every_s: float | None = 300.0,
          wall_clock_s: float | None = None, eval_max_steps: int | None = None,
          net_arch: list[int] | None = None, algo_kwargs: dict | None = None, env_kwargs: dict | None = None,
          clock: str = "wall", record: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train ``algo`` on ``env_id`` and evaluate it on the real env; returns the results row.

    Args:
        timesteps: SB3 timesteps (transitions summed over the ``num_envs`` copies); with
            ``wall_clock_s`` training stops at whichever comes first.
        eval_every_s: seconds of training wall clock between learning-curve evaluations (None:
            only at the start and the end). curve_episodes: real episodes per such evaluation.
        clock: "wall" (default) or "cpu": what ``wall_clock_s`` and ``eval_every_s`` count
            (training only, evaluation excluded, either way).
        eval_episodes: episodes of the final real-env evaluation (seeds EVAL_SEED …).
        eval_max_steps: cut every evaluation episode after this many steps (tests; None = 1000).
        net_arch, algo_kwargs: SB3 policy hidden sizes and constructor arguments; env_kwargs:
            arguments of the learned env (``bank_size``, ``integrator``, ``substeps``).
    """
    import torch

    from .base import summarize
    from .evaluate import episode_record, evaluate, table, write_gif

    system, real = parse_env_id(env_id)
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; allowed: {', '.join(ALGOS)}")
    _check_positive("timesteps", timesteps)
    _check_positive("num_envs", num_envs)
    _check_positive("eval_episodes", eval_episodes)
    _check_positive("curve_episodes", curve_episodes)
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; allowed: {', '.join(CLOCKS)}")
    for name, v in (("eval_every_s", eval_every_s), ("wall_clock_s", wall_clock_s),
                    ("eval_max_steps", eval_max_steps)):
        if v is not None and not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = 1 if real else num_envs
    config = {"algo": algo, "env": env_id, "system": system, "trained_in": "real" if real else "learned",
              "timesteps": timesteps, "num_envs": n, "checkpoint": None if checkpoint is None else str(checkpoint),
              "seed": seed, "eval_episodes": eval_episodes, "curve_episodes": curve_episodes,
              "eval_every_s": eval_every_s, "wall_clock_s": wall_clock_s, "clock": clock,
              "eval_max_steps": eval_max_steps,
              "net_arch": net_arch, "algo_kwargs": algo_kwargs or {}, "env_kwargs": env_kwargs or {}}
    _write_json(out / "config.json", config)

    env = make_train_env(system, real, n, checkpoint, seed, env_kwargs)
    model = make_model(algo, env, seed, net_arch, **(algo_kwargs or {}))
    RealCurve, Progress = _callbacks()
    curve = RealCurve(curve_returns(system, checkpoint, curve_episodes, eval_max_steps), out / "curve.jsonl",
                      real, eval_every_s, wall_clock_s, clock)
    callbacks = [curve] + ([Progress(timesteps, curve)] if progress else [])
    t0 = time.perf_counter()
    model.learn(total_timesteps=timesteps, callback=callbacks)
    total_s = time.perf_counter() - t0
    model.save(out / "model.zip")
    env.close()
    last = curve.rows[-1]
    config.update({"train_wall_clock_s": last["wall_clock_s"], "train_cpu_s": last["cpu_s"],
                   "curve_eval_time_s": last["eval_time_s"],
                   "total_wall_clock_s": round(total_s, 2), "timesteps_reached": int(model.num_timesteps),
                   "real_sim_samples": last["real_sim_samples"],
                   "stopped_by": "wall_clock" if curve.stopped_by_clock else "timesteps"})
    _write_json(out / "config.json", config)
    plot_curves({f"{algo} in {config['trained_in']} env ({clock} s)": (curve.rows, TIME_KEYS[clock])},
                out / "curve.png",
                f"{algo.upper()} on {env_id}: deterministic return on the real env")

    eval_env = real_env(system, checkpoint, record=record, max_steps=eval_max_steps)
    results, best, worst = evaluate(SB3Agent(model), eval_env, eval_episodes, EVAL_SEED, record=record,
                                    progress=progress)
    if record:
        fps = eval_env.metadata.get("render_fps", 50)
        write_gif(out / "best.gif", best.frames, fps)
        write_gif(out / "worst.gif", worst.frames, fps)
    eval_env.close()
    row = {"system": system, "agent": f"{algo} (trained in {config['trained_in']} env)", "where": "real",
           **summarize(results), "train": {k: config[k] for k in (
               "env", "timesteps_reached", "train_wall_clock_s", "real_sim_samples", "stopped_by")},
           "episodes_detail": [episode_record(r) for r in results]}
    _write_json(out / "results.json", [row])
    (out / "results.md").write_text(
        table([row]) + f"\nTrained {config['timesteps_reached']} timesteps in {config['train_wall_clock_s']:.0f} s "
        f"of training wall clock ({config['train_cpu_s']:.0f} CPU s) on {env_id} "
        f"({config['real_sim_samples']} real-simulation samples; "
        f"evaluation episodes not counted).\n")
    return row


def _check_positive(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def plot_curves(curves: dict[str, tuple[list[dict[str, Any]], str]], path: Path, title: str) -> None:
    """Real-env return against training time and against real-simulation samples (PNG).

    ``curves``: label -> (curve.jsonl rows, the time key to plot: "wall_clock_s" or "cpu_s")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keycld.viz import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, (rows, time_key) in curves.items():
        ret = np.array([r["real_return_mean"] for r in rows])
        std = np.array([r["real_return_std"] for r in rows])
        for ax, key in zip(axes, (time_key, "real_sim_samples")):
            x = np.array([r[key] for r in rows], float)
            ax.errorbar(x, ret, yerr=std, marker="o", capsize=3, label=label)
    axes[0].set_xlabel("training time (s, evaluation excluded; wall or CPU as labelled)")
    axes[1].set_xlabel("real-simulation samples used in training")
    axes[0].set_ylabel("real-env return (deterministic policy)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def write_comparison(learned_dir: Path, real_dir: Path, out: Path) -> dict[str, Any]:
    """comparison.png + comparison.md (+ .json) from a learned-env run and a real-env run."""
    out = Path(out)
    runs = {}
    for kind, d in (("learned", Path(learned_dir)), ("real", Path(real_dir))):
        rows = [json.loads(line) for line in (d / "curve.jsonl").read_text().splitlines() if line.strip()]
        runs[kind] = {"dir": str(d), "config": json.loads((d / "config.json").read_text()),
                      "result": json.loads((d / "results.json").read_text())[0], "curve": rows}
    algo = runs["learned"]["config"]["algo"]
    curves = {}
    for k, r in runs.items():
        clock = r["config"].get("clock", "wall")
        curves[f"{algo} in {k} env ({clock} s)"] = (r["curve"], TIME_KEYS[clock])
    plot_curves(curves, out / "comparison.png", f"{algo.upper()}, same training-time budget: return on the real env")
    ret = {k: runs[k]["result"]["return_mean"] for k in runs}
    ratio = ret["learned"] / ret["real"] if ret["real"] > 0 else None
    lines = ["| trained in | budget | timesteps | training wall clock (s) | training CPU (s) | real samples | "
             "real return (mean ± std) | success | episodes |", "|---|---|---|---|---|---|---|---|---|"]
    for k, r in runs.items():
        c, res = r["config"], r["result"]
        cpu = "–" if c.get("train_cpu_s") is None else f"{c['train_cpu_s']:.0f}"
        budget = "–" if c.get("wall_clock_s") is None else f"{c['wall_clock_s']:.0f} {c.get('clock', 'wall')} s"
        lines.append(f"| {k} env | {budget} | {c['timesteps_reached']} | {c['train_wall_clock_s']:.0f} | {cpu} | "
                     f"{c['real_sim_samples']} | {res['return_mean']:.1f} ± {res['return_std']:.1f} | "
                     f"{100 * res['success_rate']:.0f}% | {res['episodes']} |")
    lines.append("")
    lines.append(f"Ratio learned / real = {ratio:.2f}" if ratio is not None
                 else "Ratio undefined: the real-env agent's return is not positive.")
    summary = {"algo": algo, "learned_return": ret["learned"], "real_return": ret["real"], "ratio": ratio,
               "runs": {k: {"dir": r["dir"], **{key: r["config"].get(key) for key in (
                   "timesteps_reached", "train_wall_clock_s", "train_cpu_s", "clock", "wall_clock_s",
                   "real_sim_samples")},
                   "return_std": r["result"]["return_std"]} for k, r in runs.items()}}
    _write_json(out / "comparison.json", summary)
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    return summary


def compare(algo: str, system: str, wall_clock_s: float, out: Path, timesteps: int = 10 ** 9, **kwargs
            ) -> dict[str, Any]:
    """Train ``algo`` in the learned env, then on the real env, each for ``wall_clock_s`` seconds of
    training; write ``out/{learned,real}/`` and ``out/comparison.{png,md,json}``."""
    name = system.capitalize()
    out = Path(out)
    train(algo, f"KeyCLD-{name}-v0", timesteps, out / "learned", wall_clock_s=wall_clock_s, **kwargs)
    train(algo, f"KeyCLD-{name}-Real-v0", timesteps, out / "real", wall_clock_s=wall_clock_s, **kwargs)
    return write_comparison(out / "learned", out / "real", out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", required=True, help=f"one of {', '.join(ALGOS)}")
    p.add_argument("--env", required=True, help="KeyCLD-X-v0 (learned) or KeyCLD-X-Real-v0 (real)")
    p.add_argument("--timesteps", type=int, required=True, help="SB3 timesteps (summed over the envs)")
    p.add_argument("--num_envs", type=int, default=16, help="learned-env copies (real env: always 1)")
    p.add_argument("--checkpoint", default=None, help="run directory (default: the shipped model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_episodes", type=int, default=10, help="final real-env evaluation episodes")
    p.add_argument("--curve_episodes", type=int, default=2, help="real episodes per learning-curve point")
    p.add_argument("--eval_every_s", type=float, default=300.0,
                   help="training seconds between learning-curve points (0: start and end only)")
    p.add_argument("--wall_clock_s", type=float, default=None, help="stop after this much training time")
    p.add_argument("--clock", choices=CLOCKS, default="wall",
                   help="what --wall_clock_s and --eval_every_s count: wall clock or process CPU seconds")
    p.add_argument("--eval_max_steps", type=int, default=None, help="cut evaluation episodes (tests)")
    p.add_argument("--net_arch", default=None, help="hidden sizes, e.g. 64,64 (default: SB3's)")
    p.add_argument("--algo_kwargs", default=None, help="JSON of extra SB3 constructor arguments")
    p.add_argument("--compare", action="store_true",
                   help="train in the learned env and on the real env for the same --wall_clock_s")
    p.add_argument("--no_gifs", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default=None, help="output folder (default runs/sb3/ALGO-ENV)")
    args = p.parse_args(argv)
    if args.algo not in ALGOS:
        p.error(f"unknown --algo {args.algo!r}; allowed: {', '.join(ALGOS)}")
    try:
        system, _ = parse_env_id(args.env)
    except ValueError as e:
        p.error(f"--env: {e}")
    for name in ("timesteps", "num_envs", "eval_episodes", "curve_episodes"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.eval_every_s < 0 or (args.wall_clock_s is not None and args.wall_clock_s <= 0):
        p.error("--eval_every_s must be >= 0 and --wall_clock_s > 0")
    if args.eval_max_steps is not None and args.eval_max_steps < 1:
        p.error(f"--eval_max_steps must be >= 1, got {args.eval_max_steps}")
    if args.compare and args.wall_clock_s is None:
        p.error("--compare needs --wall_clock_s (the budget of each run)")
    try:
        net_arch = [int(h) for h in args.net_arch.split(",")] if args.net_arch else None
        algo_kwargs = json.loads(args.algo_kwargs) if args.algo_kwargs else None
    except ValueError as e:
        p.error(f"--net_arch / --algo_kwargs: {e}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    kw = dict(num_envs=args.num_envs, checkpoint=args.checkpoint, seed=args.seed,
              eval_episodes=args.eval_episodes, curve_episodes=args.curve_episodes,
              eval_every_s=args.eval_every_s or None, eval_max_steps=args.eval_max_steps, net_arch=net_arch,
              algo_kwargs=algo_kwargs, clock=args.clock, record=not args.no_gifs, progress=not args.quiet)
    if args.compare:
        out = Path(args.out or f"runs/sb3/compare-{args.algo}-{system}")
        summary = compare(args.algo, system, args.wall_clock_s, out, args.timesteps, **kw)
        print((out / "comparison.md").read_text())
        ratio = "undefined" if summary["ratio"] is None else f"{summary['ratio']:.2f}"
        print(f"learned / real return ratio: {ratio}; wrote {out}/comparison.md, comparison.png, learned/, real/")
        return 0
    out = Path(args.out or f"runs/sb3/{args.algo}-{args.env}")
    from .evaluate import table
    row = train(args.algo, args.env, args.timesteps, out, wall_clock_s=args.wall_clock_s, **kw)
    print(table([row]))
    print(f"wrote {out}/model.zip, config.json, curve.jsonl, curve.png, results.json, results.md"
          + ("" if args.no_gifs else ", best.gif, worst.gif"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
