"""Closed-loop control on the real simulation: (system × agent) -> success rate and return.

    python benchmarks/control.py [--systems pendulum,cartpole,acrobot] [--agents energy,energy-true,random,zero]
                                 [--episodes 50] [--underactuated_cartpole]

Every agent runs on ``KeyCLD-*-Real-v0`` (learned-model agents see only the encoder's keypoints
of the 64×64 frames) with the same episode seeds; ``energy-true`` is the true-model baseline,
``random`` and ``zero`` the trivial baselines. Rows whose agent needs a shipped model that does
not exist yet are reported as "no shipped model" rather than run. Planning time per control step
is the median wall time of ``agent.act``. ``ppo-jax`` rows evaluate the policy that
``agents/ppo_jax.py`` trained only inside the learned model, ``results/ppo_jax/<system>/`` (its
results there are reused; a system without one is reported as "no trained policy").

Writes benchmarks/results/control.{json,md}; ``--merge`` keeps rows of other (system, agent)
pairs from an earlier run. Finished rows (``results/control/<row>/results.json``) are reused, so
an interrupted run continues where it stopped (``--rerun`` forces them).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MUJOCO_GL", "egl")

from _common import RESULTS, machine, write_results  # noqa: E402

from agents import ppo_jax  # noqa: E402
from agents.evaluate import AGENTS, NEEDS_MODEL, format_ms, make_agent, run  # noqa: E402
from keycld.tasks import ENVIRONMENTS  # noqa: E402
from keycld_gym.loading import MODELS_DIR  # noqa: E402

HEADER = ["system", "agent", "episodes", "success", "return (mean ± std)", "swing-up (median s)",
          "act (median ms)", "plan (median ms)"]


def _row_key(row: dict) -> tuple[str, str]:
    return row["system"], row["agent"]


def _order(row: dict) -> tuple:
    """Table order: system, then fully actuated before underactuated, then agent as in AGENTS."""
    agent = row["agent"].replace(" (underactuated)", "")
    return (ENVIRONMENTS.index(row["system"]), row["agent"].endswith("(underactuated)"),
            AGENTS.index(agent) if agent in AGENTS else len(AGENTS))


def _ppo_note(rows: list[dict]) -> str:
    """Training budget of the ppo-jax rows (trained only inside the learned model)."""
    parts = [f"{r['system']}{' underactuated' if r['agent'].endswith('(underactuated)') else ''}: "
             f"{r['train']['env_steps']:,} env steps in {r['train']['train_wall_clock_s']:.0f} s"
             for r in rows if r["agent"].startswith("ppo-jax") and "train" in r]
    if not parts:
        return ""
    return (" ppo-jax: PPO trained only inside the learned model (0 real-simulation samples; "
            "results/ppo_jax/<system>/), training wall clock on this CPU including compilation — "
            + "; ".join(parts) + ".")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default=",".join(ENVIRONMENTS))
    p.add_argument("--agents", default="energy,energy-true,random,zero")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--episodes_pixels", type=int, default=None,
                   help="episodes for agents that see pixels (render + encode every step; default --episodes)")
    p.add_argument("--rerun", action="store_true",
                   help="rerun rows whose results/control/<row>/results.json already has the episode count")
    p.add_argument("--underactuated_cartpole", action="store_true", help="add cartpole rows with pole torque 0")
    p.add_argument("--only_underactuated", action="store_true",
                   help="with --underactuated_cartpole: only those rows (e.g. another episode count)")
    p.add_argument("--merge", action="store_true", help="keep other rows of results/control.json")
    args = p.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    agents = [a for a in args.agents.split(",") if a]
    for s in systems:
        if s not in ENVIRONMENTS:
            p.error(f"unknown system {s!r}; allowed: {', '.join(ENVIRONMENTS)}")
    for a in agents:
        if a not in AGENTS:
            p.error(f"unknown agent {a!r}; allowed: {', '.join(AGENTS)}")
    if args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")

    if args.only_underactuated and not args.underactuated_cartpole:
        p.error("--only_underactuated needs --underactuated_cartpole")
    jobs = [] if args.only_underactuated else [(s, a, False) for s in systems for a in agents]
    if args.underactuated_cartpole and "cartpole" in systems:
        jobs += [("cartpole", a, True) for a in agents]
    rows = []
    for system, agent, under in jobs:
        label = agent + (" (underactuated)" if under else "")
        if agent in NEEDS_MODEL and not (MODELS_DIR / system / "config.json").exists():
            rows.append({"system": system, "agent": label, "missing": "no shipped model"})
            continue
        episodes = args.episodes_pixels or args.episodes if agent in NEEDS_MODEL else args.episodes
        out = RESULTS / "control" / f"{agent}-{system}{'-underactuated' if under else ''}"
        factory = None
        if agent == "ppo-jax":
            out = RESULTS / "ppo_jax" / f"{system}{'-underactuated' if under else ''}"
            if not (out / ppo_jax.POLICY_FILE).exists():
                rows.append({"system": system, "agent": label, "missing": "no trained policy"})
                continue
            factory = functools.partial(make_agent, policy=out)
        done = out / "results.json"
        if not args.rerun and done.exists() and json.loads(done.read_text())[0]["episodes"] == episodes:
            (row,) = json.loads(done.read_text())  # a finished row of an interrupted run
        else:
            t = time.perf_counter()
            (row,) = run(agent, system, episodes, "real", under, out=out, progress=True, agent_factory=factory)
            row["wall_s"] = time.perf_counter() - t
            done.write_text(json.dumps([row], indent=1))
        if agent == "ppo-jax" and "train" not in row:
            meta = ppo_jax.load_policy(out)[2]
            row["train"] = {k: meta.get(k) for k in ("train_wall_clock_s", "env_steps", "real_sim_samples")}
        row.pop("episodes_detail", None)
        rows.append(row)
        print(f"{system} {label}: success {row['success_rate']:.2f}, return {row['return_mean']:.0f} "
              f"({row.get('wall_s', 0):.0f} s)", flush=True)

    if args.merge and (RESULTS / "control.json").exists():
        old = json.loads((RESULTS / "control.json").read_text())["rows"]
        new_keys = {_row_key(r) for r in rows}
        rows = [r for r in old if _row_key(r) not in new_keys] + rows
    rows.sort(key=_order)
    table = []
    for r in rows:
        if "missing" in r:
            table.append([r["system"], r["agent"], "–", r["missing"], "–", "–", "–", "–"])
            continue
        up = "–" if r["swing_up_time_median_s"] is None else f"{r['swing_up_time_median_s']:.2f}"
        table.append([r["system"], r["agent"], str(r["episodes"]), f"{100 * r['success_rate']:.0f}%",
                      f"{r['return_mean']:.0f} ± {r['return_std']:.0f}", up, f"{r['act_time_median_ms']:.2f}",
                      format_ms(r.get("plan_time_median_ms"))])
    notes = ("Real simulation (MuJoCo, the paper's physics); success = the task's sparse reward on every "
             "step of the final second. Learned-model agents see only 64×64 frames through the encoder. "
             f"Last command: `python benchmarks/control.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
             + (" (merged with the rows of earlier runs)" if args.merge else "") + ". "
             "Each row's details, command-independent, are in results/control/<agent>-<system>/results.json "
             "with its best/worst GIFs." + _ppo_note(rows))
    md = write_results("control", {"machine": machine(), "rows": rows}, table, HEADER, notes)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
