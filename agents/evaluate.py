"""Closed-loop evaluation of an agent on the real simulation (and inside the learned model).

    python agents/evaluate.py --agent energy --system pendulum --episodes 50
    python agents/evaluate.py --agent energy-true --system cartpole --underactuated

Agents: ``energy`` (energy shaping on the trained model, fed by the encoder on the real 64×64
frames: ``KeyCLD-*-Real-v0`` with ``obs_type="keypoints"``), ``energy-true`` (the same law on
MuJoCo's true model and state), ``mpc-grad`` / ``mpc-cem`` (planners through the learned model,
``agents.mpc``), ``ppo-jax`` (a policy trained inside the learned model by ``agents.ppo_jax``,
``--policy DIR``), ``random`` and ``zero`` baselines. ``--where learned`` (or ``both``) runs the
agent inside the learned environment too, so the two tables sit side by side.

Writes ``OUT/results.json`` (per-episode and summary), ``OUT/results.md`` and GIFs of the best
and the worst episode (``best.gif``, ``worst.gif``).
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file (python agents/evaluate.py)
    import runpy, sys  # noqa: E401  # rerun as the package module, so relative imports work
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    runpy.run_module("agents.evaluate", run_name="__main__", alter_sys=True)
    raise SystemExit(0)

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .base import EpisodeResult, run_episode, summarize
from keycld.tasks import ENVIRONMENTS

AGENTS = ("energy", "energy-true", "mpc-grad", "mpc-cem", "ppo-jax", "random", "zero")
WHERE = ("real", "learned", "both")
NEEDS_MODEL = {"energy", "mpc-grad", "mpc-cem", "ppo-jax"}


class ConstantAgent:
    """Zero action every step (baseline)."""

    def __init__(self, num_actions: int):
        self.num_actions = num_actions

    def reset(self, env, obs, info) -> None:
        pass

    def act(self, obs, info) -> np.ndarray:
        return np.zeros(self.num_actions, np.float32)


class RandomAgent:
    """Uniform random actions in the Box (baseline), seeded by (seed, the episode's seed)."""

    def __init__(self, num_actions: int, seed: int = 0):
        self.num_actions, self.seed = num_actions, seed
        self.rng = np.random.default_rng(seed)

    def reset(self, env, obs, info) -> None:
        self.rng = np.random.default_rng([self.seed, int(info.get("seed") or 0)])

    def act(self, obs, info) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, self.num_actions).astype(np.float32)


class HoldPoleTorque:
    """Wraps an agent for ``--underactuated``: the cartpole's pole torque is held at 0."""

    def __init__(self, agent):
        self.agent = agent

    def reset(self, env, obs, info) -> None:
        self.agent.reset(env, obs, info)

    def act(self, obs, info) -> np.ndarray:
        a = np.array(self.agent.act(obs, info), np.float32)
        a[1:] = 0.0
        return a

    @property
    def plan_times_ms(self):
        """The wrapped agent's planning times (None for agents that do not plan)."""
        return getattr(self.agent, "plan_times_ms", None)


def make_agent(name: str, system: str, checkpoint=None, underactuated: bool = False, seed: int = 0,
               **kwargs):
    """An ``agents.base.Agent`` by name (see ``AGENTS``)."""
    from keycld.tasks import TASK_SPECS

    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; allowed: {', '.join(AGENTS)}")
    if underactuated and system != "cartpole":
        raise ValueError(f"--underactuated is defined for the cartpole only, not {system!r}")
    num_actions = TASK_SPECS[system].num_actions
    if name == "energy":
        from .energy_shaping import learned_controller
        agent = learned_controller(system, checkpoint, underactuated=underactuated, **kwargs)
    elif name == "energy-true":
        from .energy_shaping import true_controller
        agent = true_controller(system, underactuated=underactuated, **kwargs)
    elif name in ("mpc-grad", "mpc-cem"):
        from .mpc import make_mpc
        agent = make_mpc(system, name.split("-")[1], checkpoint, underactuated=underactuated, seed=seed, **kwargs)
    elif name == "ppo-jax":
        from .ppo_jax import policy_agent
        agent = policy_agent(kwargs.pop("policy", None), system, checkpoint, underactuated)
    elif name == "random":
        agent = RandomAgent(num_actions, seed)
    else:
        agent = ConstantAgent(num_actions)
    return HoldPoleTorque(agent) if underactuated else agent


def make_env(system: str, where: str, agent_name: str, checkpoint=None, record: bool = False):
    """The real env (keypoint observations for learned-model agents) or the learned env."""
    import gymnasium as gym

    import keycld_gym  # noqa: F401  (registers the ids)

    name = system.capitalize()
    render_mode = "rgb_array" if record else None
    if where == "learned":
        return gym.make(f"KeyCLD-{name}-v0", checkpoint=checkpoint, render_mode=render_mode)
    obs_type = "keypoints" if agent_name in NEEDS_MODEL else "state"
    return gym.make(f"KeyCLD-{name}-Real-v0", obs_type=obs_type, checkpoint=checkpoint, render_mode=render_mode)


def evaluate(agent, env, episodes: int, seed: int = 0, record: bool = True, progress: bool = True,
             max_steps: int | None = None) -> tuple[list[EpisodeResult], EpisodeResult, EpisodeResult]:
    """Run ``episodes`` episodes (seeds seed … seed+episodes−1).

    Returns (results, best episode, worst episode by return). With ``record`` the best and the
    worst are played again with frames (agents and envs are deterministic given the seed), so
    only two episodes pay for rendering.
    """
    from tqdm import tqdm

    results: list[EpisodeResult] = []
    bar = tqdm(range(seed, seed + episodes), desc=f"{env.unwrapped.system}", disable=not progress, unit="ep")
    for s in bar:
        results.append(run_episode(env, agent, s, max_steps=max_steps))
        bar.set_postfix(success=f"{np.mean([x.success for x in results]):.2f}",
                        ret=f"{np.mean([x.ret for x in results]):.0f}")
    best = max(results, key=lambda r: r.ret)
    worst = min(results, key=lambda r: r.ret)
    if record:
        best = run_episode(env, agent, best.seed, record=True, max_steps=max_steps)
        worst = run_episode(env, agent, worst.seed, record=True, max_steps=max_steps)
    return results, best, worst


def write_gif(path: Path, frames: np.ndarray, fps: int, scale: int = 2, stride: int = 4) -> None:
    """Frames (T, H, W, 3) uint8 -> a GIF of every ``stride``-th frame upscaled ×``scale``
    (real-time playback), written atomically by keycld.viz.save_gif within its default byte budget."""
    from keycld.viz import save_gif

    save_gif(path, np.repeat(np.repeat(frames[::stride], scale, axis=1), scale, axis=2), fps / stride)


def episode_record(r: EpisodeResult) -> dict[str, Any]:
    return {"seed": r.seed, "return": r.ret, "success": r.success, "swing_up_time_s": r.swing_up_time,
            "steps": r.steps, "act_time_ms": r.act_time_ms, "plan_time_ms": r.plan_time_ms}


def format_ms(value: float | None) -> str:
    """A median time in ms for the tables, "–" when not measured."""
    return "–" if value is None else f"{value:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of summaries (keys: agent, system, where, success_rate, return_mean, ...)."""
    head = ("| system | agent | env | episodes | success | return (mean ± std) | swing-up (median s) | "
            "act (median ms) | plan (median ms) |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        up = "–" if r["swing_up_time_median_s"] is None else f"{r['swing_up_time_median_s']:.2f}"
        lines.append(f"| {r['system']} | {r['agent']} | {r['where']} | {r['episodes']} | "
                     f"{100 * r['success_rate']:.0f}% | {r['return_mean']:.0f} ± {r['return_std']:.0f} | {up} | "
                     f"{r['act_time_median_ms']:.2f} | {format_ms(r.get('plan_time_median_ms'))} |")
    return head + "\n".join(lines) + "\n"


def run(agent_name: str, system: str, episodes: int, where: str = "real", underactuated: bool = False,
        checkpoint=None, seed: int = 0, out: Path | None = None, progress: bool = True,
        agent_factory: Callable | None = None, max_steps: int | None = None) -> list[dict[str, Any]]:
    """Evaluate one agent on one system; returns summary rows (one per env kind)."""
    rows = []
    label = agent_name + (" (underactuated)" if underactuated else "")
    for w in (("real", "learned") if where == "both" else (where,)):
        agent = (agent_factory or make_agent)(agent_name, system, checkpoint, underactuated, seed)
        env = make_env(system, w, agent_name, checkpoint, record=out is not None)
        results, best, worst = evaluate(agent, env, episodes, seed, record=out is not None, progress=progress,
                                        max_steps=max_steps)
        row = {"system": system, "agent": label, "where": w, **summarize(results),
               "episodes_detail": [episode_record(r) for r in results]}
        rows.append(row)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            fps = env.metadata.get("render_fps", 50)
            write_gif(out / f"{w}-best.gif", best.frames, fps)
            write_gif(out / f"{w}-worst.gif", worst.frames, fps)
        env.close()
    if out is not None:
        tmp = out / ".results.json.tmp"
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, out / "results.json")
        (out / "results.md").write_text(table(rows))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", choices=AGENTS, required=True)
    p.add_argument("--system", choices=ENVIRONMENTS, required=True)
    p.add_argument("--underactuated", action="store_true", help="cartpole: pole torque held at 0")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--where", choices=WHERE, default="real",
                   help="real simulation (default), learned model, or both side by side")
    p.add_argument("--checkpoint", default=None, help="run directory (default: the shipped model)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed")
    p.add_argument("--policy", default=None, help="ppo-jax: the folder agents/ppo_jax.py wrote")
    p.add_argument("--out", default=None, help="output folder (default runs/eval/AGENT-SYSTEM)")
    p.add_argument("--max_steps", type=int, default=None,
                   help="cut episodes short (smoke tests; success needs full episodes)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.max_steps is not None and args.max_steps < 1:
        p.error(f"--max_steps must be >= 1, got {args.max_steps}")
    if args.underactuated and args.system != "cartpole":
        p.error(f"--underactuated is defined for the cartpole only, not {args.system!r}")
    if (args.policy is not None) != (args.agent == "ppo-jax"):
        p.error("--policy DIR is required by --agent ppo-jax and meaningless for the other agents")
    os.environ.setdefault("MUJOCO_GL", "egl")
    factory = functools.partial(make_agent, policy=args.policy) if args.policy is not None else None
    suffix = "-underactuated" if args.underactuated else ""
    out = Path(args.out or f"runs/eval/{args.agent}-{args.system}{suffix}")
    rows = run(args.agent, args.system, args.episodes, args.where, args.underactuated, args.checkpoint,
               args.seed, out, progress=not args.quiet, agent_factory=factory, max_steps=args.max_steps)
    print(table(rows))
    print(f"wrote {out}/results.json, results.md and best/worst GIFs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
