"""The agent protocol, the swing-up success criterion and the episode runner.

An agent is anything with ``reset(env, obs, info)`` and ``act(obs, info) -> action`` where the
action is ``(A,)`` float32 in the env's action Box ``[-1, 1]`` (×2 to the datasets' units).
``env`` is the (unwrapped) KeyCLD environment, learned or real, so that a true-model agent can
read the simulator and a learned-model agent the environment's parameters.

**Success**: the task's sparse reward holds on every step of the final second —
pendulum within 8° of upright; cartpole |cart| < 0.25 m and pole cosine > 0.995; acrobot tip
within 0.2 m of the target. On the real env it is read from MuJoCo, on the learned env from the
keypoints through the known geometry (``keycld.systems``).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Protocol

import jax.numpy as jnp
import numpy as np

from keycld.tasks import TASK_SPECS
from keycld import systems as R

CART_BOUND = 0.25  # m, dm_control cartpole's sparse "centered"
CART_COSINE_BOUND = 0.995
SUCCESS_WINDOW_S = 1.0


class Agent(Protocol):
    def reset(self, env, obs: np.ndarray, info: dict[str, Any]) -> None: ...

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray: ...


def sparse_real(system: str, physics) -> bool:
    """The task's sparse swing-up reward from the simulator (True = at the goal)."""
    if system == "pendulum":
        return bool(physics.pole_vertical() > R.PENDULUM_COSINE_BOUND)
    if system == "cartpole":
        return bool(abs(physics.cart_position()) < CART_BOUND
                    and physics.pole_angle_cosine()[0] > CART_COSINE_BOUND)
    if system == "acrobot":
        return bool(physics.to_target() <= R.ACROBOT_TARGET_RADIUS)
    raise ValueError(f"unknown system {system!r}; allowed: pendulum, cartpole, acrobot")


def sparse_keypoints(system: str, x: np.ndarray) -> bool:
    """The sparse swing-up reward from keypoints x (2K,) in image units (learned env)."""
    x = jnp.asarray(x)
    zero = jnp.zeros_like(x)
    if system == "pendulum":
        cos, _ = R.pendulum_quantities(x, zero)
        return bool(cos > R.PENDULUM_COSINE_BOUND)
    if system == "cartpole":
        cart, cos, _ = R.cartpole_quantities(x, zero)
        return bool((abs(cart) < CART_BOUND) & (cos > CART_COSINE_BOUND))
    if system == "acrobot":
        d = jnp.linalg.norm(R.acrobot_tip(x) - jnp.asarray(R.ACROBOT_TARGET))
        return bool(d <= R.ACROBOT_TARGET_RADIUS)
    raise ValueError(f"unknown system {system!r}; allowed: pendulum, cartpole, acrobot")


@dataclasses.dataclass
class EpisodeResult:
    """One closed-loop episode.

    Attributes:
        seed: reset seed. ret: sum of the env's (dm_control) rewards. success: sparse reward held
        on every step of the final second. swing_up_time: seconds until the sparse reward holds
        for the rest of the episode (None without success). steps: control steps taken.
        act_time_ms: median wall time of ``agent.act`` per step. plan_time_ms: median wall time
        of the steps that planned (agents with ``plan_times_ms``, e.g. a dual-mode planner whose
        LQR acts near the goal), else None. frames: (T, 64, 64, 3) uint8 when recorded, else
        None. sparse: (T,) bool.
    """

    seed: int
    ret: float
    success: bool
    swing_up_time: float | None
    steps: int
    act_time_ms: float
    sparse: np.ndarray
    frames: np.ndarray | None = None
    plan_time_ms: float | None = None


def success_of(sparse: np.ndarray, dt: float) -> tuple[bool, float | None]:
    """(success, swing-up time in s) from the per-step sparse reward (T,) bool."""
    window = int(round(SUCCESS_WINDOW_S / dt))
    if len(sparse) < window or not np.all(sparse[-window:]):
        return False, None
    failures = np.flatnonzero(~sparse)
    first = 0 if len(failures) == 0 else int(failures[-1]) + 1
    return True, first * dt


def run_episode(env, agent: Agent, seed: int, record: bool = False, max_steps: int | None = None) -> EpisodeResult:
    """Roll ``agent`` on ``env`` (a learned or real KeyCLD env, possibly wrapped) from ``seed``.

    ``record`` keeps the frames (``env.render()``: the env needs ``render_mode="rgb_array"``).
    """
    base = env.unwrapped
    system = base.system
    real = hasattr(base, "physics")
    obs, info = env.reset(seed=seed)
    agent.reset(base, obs, {**info, "seed": seed})  # the episode seed, for stochastic agents
    frames, sparse, act_times, ret, steps = [], [], [], 0.0, 0
    if record:
        frames.append(env.render())
    while True:
        t0 = time.perf_counter()
        action = agent.act(obs, info)
        act_times.append(time.perf_counter() - t0)
        obs, reward, terminated, truncated, info = env.step(action)
        ret += float(reward)
        steps += 1
        sparse.append(sparse_real(system, base.physics) if real else sparse_keypoints(system, base.state.x))
        if record:
            frames.append(env.render())
        if terminated or truncated or (max_steps is not None and steps >= max_steps):
            break
    sparse_arr = np.asarray(sparse, bool)
    ok, t_up = success_of(sparse_arr, TASK_SPECS[system].dt)
    plans = getattr(agent, "plan_times_ms", None)
    return EpisodeResult(seed, ret, ok, t_up, steps, 1e3 * float(np.median(act_times)), sparse_arr,
                         np.stack(frames) if record else None,
                         float(np.median(plans)) if plans else None)


def summarize(results: list[EpisodeResult]) -> dict[str, Any]:
    """Success rate, mean ± std return, median swing-up time, median planning time per step."""
    rets = np.array([r.ret for r in results])
    ups = [r.swing_up_time for r in results if r.swing_up_time is not None]
    plans = [r.plan_time_ms for r in results if r.plan_time_ms is not None]
    return {"episodes": len(results), "success_rate": float(np.mean([r.success for r in results])),
            "return_mean": float(rets.mean()), "return_std": float(rets.std()),
            "swing_up_time_median_s": float(np.median(ups)) if ups else None,
            "act_time_median_ms": float(np.median([r.act_time_ms for r in results])),
            "plan_time_median_ms": float(np.median(plans)) if plans else None}

