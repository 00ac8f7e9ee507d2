"""Diagnostics: roll a learned env and the real env from the same state, side by side.

    result = keycld_gym.compare(learned_env, real_env, actions, seed=0, out="cmp/")
    result.summary()    # mean/max keypoint error, mean |reward error|, both returns

The real env (``KeyCLDRealEnv``, ``obs_type="keypoints"``) is reset with ``seed``; its first
keypoint observation (the encoder on the real frames) becomes the learned env's initial state;
then both get the same actions. With ``out`` three files are written (each atomically):
``compare.gif`` (real | learned, 4× nearest upscaling; GIF needs no ffmpeg),
``compare.json`` (one entry per step + summary) and ``compare.png`` (error and rewards vs step).

CLI::

    python -m keycld_gym.compare --system pendulum --checkpoint RUN_DIR --steps 200 \\
        --seed 0 --actions sine --out DIR

Heavy imports (jax, MuJoCo) happen inside the functions, so ``import keycld_gym`` stays light.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keycld import fileio
from keycld.viz import save_figure

ACTION_KINDS = ("zero", "random", "sine")
UPSCALE = 4
SINE_HZ = 0.5


@dataclass(frozen=True)
class CompareResult:
    """One side-by-side rollout. T = number of actions, K = keypoints, A = action dim.

    Row 0 of the (T+1, …) arrays is the initial state (before any action); row t the state
    after ``actions[t-1]``. Reward arrays (T,) hold the reward of each step.

    Attributes:
        system, seed: the system and the real env's reset seed; dt: control step in seconds.
        actions: (T, A) float32 in [-1, 1].
        real_keypoints: (T+1, 4K) float32 ``[x, ẋ]`` encoded from the real frames
            (x in image units, [-1, 1] spans the image, y up; ẋ in image units / s).
        learned_keypoints: (T+1, 4K) float32, the learned env's state ``[x, ẋ]``.
        keypoint_error: (T+1,) float64, ‖x_real − x_learned‖₂ over all 2K position coordinates,
            image units (row 0 is 0 by construction).
        real_reward, learned_reward: (T,) float64, dm_control's reward and the learned env's
            keypoint reward; reward_error: (T,) |real − learned|.
        real_frames: (T+1, 64, 64, 3) uint8 camera frames; learned_frames: (T+1, 64, 64, 3)
            uint8 frames of the learned renderer at the learned state.
    """

    system: str
    seed: int
    dt: float
    actions: np.ndarray
    real_keypoints: np.ndarray
    learned_keypoints: np.ndarray
    keypoint_error: np.ndarray
    real_reward: np.ndarray
    learned_reward: np.ndarray
    reward_error: np.ndarray
    real_frames: np.ndarray
    learned_frames: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.actions.shape[0])

    def summary(self) -> dict:
        """Scalars over steps 1…T: mean/max/final keypoint error (image units), mean |reward
        error|, and the return (sum of rewards) of each env."""
        err = self.keypoint_error[1:]
        return {"system": self.system, "seed": self.seed, "steps": self.steps,
                "mean_keypoint_error": float(err.mean()), "max_keypoint_error": float(err.max()),
                "final_keypoint_error": float(err[-1]),
                "mean_abs_reward_error": float(self.reward_error.mean()),
                "real_return": float(self.real_reward.sum()),
                "learned_return": float(self.learned_reward.sum())}

    def to_json(self) -> dict:
        """Per-step errors and rewards (T entries, step t = after action t-1) plus the summary."""
        d = self.real_keypoints.shape[1] // 2
        steps = [{"step": t, "action": self.actions[t - 1].tolist(),
                  "keypoint_error": float(self.keypoint_error[t]),
                  "real_reward": float(self.real_reward[t - 1]),
                  "learned_reward": float(self.learned_reward[t - 1]),
                  "reward_error": float(self.reward_error[t - 1]),
                  "real_position": self.real_keypoints[t, :d].tolist(),
                  "learned_position": self.learned_keypoints[t, :d].tolist()}
                 for t in range(1, self.steps + 1)]
        return {"system": self.system, "seed": self.seed, "dt": self.dt,
                "units": {"keypoints": "image units ([-1, 1] spans the image)", "video": "real | learned"},
                "initial_keypoints": self.real_keypoints[0].tolist(),
                "summary": self.summary(), "steps": steps}


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _check_envs(model_env, real_env):
    """Unwrapped (learned, real) envs, or ValueError naming the mismatch."""
    from keycld_gym.envs import KeyCLDEnv
    from keycld_gym.paper import KeyCLDRealEnv

    learned, real = getattr(model_env, "unwrapped", model_env), getattr(real_env, "unwrapped", real_env)
    if not isinstance(learned, KeyCLDEnv):
        raise ValueError(f"model_env must be a learned KeyCLDEnv (KeyCLD-*-v0), got {type(learned).__name__}")
    if not isinstance(real, KeyCLDRealEnv):
        raise ValueError(f"real_env must be a KeyCLDRealEnv (KeyCLD-*-Real-v0), got {type(real).__name__}")
    if learned.system != real.system:
        raise ValueError(f"system mismatch: model_env is {learned.system!r}, real_env is {real.system!r}")
    if real.obs_type != "keypoints":
        raise ValueError(f"real_env must have obs_type='keypoints' (the encoder gives the initial state), "
                         f"got obs_type={real.obs_type!r}")
    if not _same_weights(learned.params.weights, real.weights):
        warnings.warn("model_env and real_env use different checkpoints: their keypoints need not "
                      "correspond, so the keypoint error may be meaningless", stacklevel=3)
    return learned, real


def _same_weights(a, b) -> bool:
    import jax
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.shape(x) == np.shape(y) and np.array_equal(x, y) for x, y in zip(la, lb))


def _check_actions(actions, num_actions: int) -> np.ndarray:
    """(T, A) float32 in [-1, 1] with T ≥ 1, else ValueError."""
    a = np.asarray(actions, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != num_actions:
        raise ValueError(f"actions must have shape (T, {num_actions}) with T >= 1, got {a.shape}")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise ValueError(f"actions are not finite at steps {np.flatnonzero(bad)[:10].tolist()}")
    out = (np.abs(a) > 1.0).any(axis=1)
    if out.any():
        raise ValueError(f"actions outside [-1, 1] at steps {np.flatnonzero(out)[:10].tolist()}")
    return a


# ---------------------------------------------------------------------------------------------
# rollout
# ---------------------------------------------------------------------------------------------
def _learned_frame(learned) -> np.ndarray:
    from keycld_gym.envs import _render
    return np.asarray(_render(learned._state, learned.params))


def _rollout(learned, real, actions: np.ndarray, seed: int) -> dict[str, list]:
    """Reset both (learned from the real env's encoded state), step both with ``actions``."""
    from keycld_gym import functional as F

    rec = {k: [] for k in ("real_kp", "learned_kp", "real_r", "learned_r", "real_f", "learned_f")}
    real_obs, _ = real.reset(seed=seed)
    left = real.remaining_steps
    if len(actions) > left:
        raise ValueError(f"{len(actions)} actions, but the real episode ends after {int(left)} more steps")
    learned.reset(seed=seed, options={"state": real_obs})

    def record(real_obs):
        rec["real_kp"].append(np.asarray(real_obs, np.float32))
        rec["learned_kp"].append(np.asarray(F.observe(learned._state)))
        rec["real_f"].append(np.array(real._frames[-1], copy=True))  # renderers may reuse buffers
        rec["learned_f"].append(_learned_frame(learned))

    record(real_obs)
    for a in actions:
        real_obs, r_real, *_ = real.step(a)
        _, r_learned, *_ = learned.step(a)
        rec["real_r"].append(r_real)
        rec["learned_r"].append(r_learned)
        record(real_obs)
    return rec


def compare(model_env, real_env, actions, seed: int = 0, out: str | os.PathLike | None = None) -> CompareResult:
    """Roll ``real_env`` and ``model_env`` from the same initial state with the same actions.

    Args:
        model_env: learned ``KeyCLDEnv`` (gym.make wrappers allowed; ``.unwrapped`` is used).
        real_env: ``KeyCLDRealEnv`` of the same system with ``obs_type="keypoints"``.
        actions: (T, A) in [-1, 1], finite; T at most the real episode's remaining steps
            (``max_episode_steps``, 1000 by default, after a reset).
        seed: reset seed of the real env (the learned env starts from its encoded state).
        out: directory; if given, writes compare.gif, compare.json and compare.png there.
    Returns:
        CompareResult (per-step keypoints, errors, rewards and frames; see its docstring).
    Raises:
        ValueError: wrong env types, system mismatch, real obs_type ≠ "keypoints", bad actions.
    """

    learned, real = _check_envs(model_env, real_env)
    a = _check_actions(actions, learned.action_space.shape[0])
    rec = _rollout(learned, real, a, int(seed))
    real_kp, learned_kp = np.stack(rec["real_kp"]), np.stack(rec["learned_kp"])
    d = real_kp.shape[1] // 2
    real_r, learned_r = np.asarray(rec["real_r"], np.float64), np.asarray(rec["learned_r"], np.float64)
    result = CompareResult(
        system=learned.system, seed=int(seed), dt=float(learned.params.model.system.dt), actions=a,
        real_keypoints=real_kp, learned_keypoints=learned_kp,
        keypoint_error=np.linalg.norm(real_kp[:, :d].astype(np.float64) - learned_kp[:, :d], axis=1),
        real_reward=real_r, learned_reward=learned_r, reward_error=np.abs(real_r - learned_r),
        real_frames=np.stack(rec["real_f"]), learned_frames=np.stack(rec["learned_f"]))
    if out is not None:
        write_outputs(result, out)
    return result


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------
def side_by_side(real: np.ndarray, learned: np.ndarray, scale: int = UPSCALE) -> np.ndarray:
    """(T, H, W, 3) × 2 uint8 -> (T, sH, s(2W)+2s, 3): real | white bar | learned, nearest upscaled."""
    bar = np.full((*real.shape[:2], 2, 3), 255, np.uint8)
    joined = np.concatenate([real, bar, learned], axis=2)
    return joined.repeat(scale, axis=1).repeat(scale, axis=2)


def _write_gif(result: CompareResult, path: Path) -> None:
    """real | learned at the env's rate (1/dt fps) through keycld.viz.save_gif, which keeps real-time
    playback and its default byte budget."""
    from keycld.viz import save_gif
    save_gif(path, side_by_side(result.real_frames, result.learned_frames), 1.0 / result.dt)


def _write_json(result: CompareResult, path: Path) -> None:
    text = json.dumps(result.to_json(), indent=1, allow_nan=False)
    fileio.write_text(path, text)


def _write_plot(result: CompareResult, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(result.steps + 1)
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax0.plot(t, result.keypoint_error)
    ax0.set_ylabel("keypoint error [image units]")
    ax0.set_title(f"{result.system}, seed {result.seed}: real vs learned")
    ax1.plot(t[1:], result.real_reward, label="real")
    ax1.plot(t[1:], result.learned_reward, label="learned", linestyle="--")
    ax1.set_ylabel("reward")
    ax1.set_xlabel(f"step (dt = {result.dt} s)")
    ax1.legend()
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def write_outputs(result: CompareResult, out: str | os.PathLike) -> dict[str, Path]:
    """Write compare.gif, compare.json, compare.png into ``out`` (created); returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"video": out / "compare.gif", "json": out / "compare.json", "plot": out / "compare.png"}
    _write_gif(result, paths["video"])
    _write_json(result, paths["json"])
    _write_plot(result, paths["plot"])
    return paths


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def make_actions(kind: str, steps: int, num_actions: int, dt: float, seed: int = 0) -> np.ndarray:
    """(steps, num_actions) float32 in [-1, 1]: zeros, uniform random (``seed``), or a 0.5 Hz
    full-amplitude sine (each action component a quarter period later)."""
    if kind not in ACTION_KINDS:
        raise ValueError(f"unknown actions {kind!r}; allowed: {', '.join(ACTION_KINDS)}")
    if kind == "zero":
        return np.zeros((steps, num_actions), np.float32)
    if kind == "random":
        return np.random.default_rng(seed).uniform(-1, 1, (steps, num_actions)).astype(np.float32)
    t = np.arange(steps)[:, None] * dt
    phase = np.arange(num_actions)[None, :] * np.pi / 2
    return np.sin(2 * np.pi * SINE_HZ * t + phase).astype(np.float32)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from keycld.tasks import ENVIRONMENTS
    p = argparse.ArgumentParser(prog="python -m keycld_gym.compare",
                                description="Roll the real and the learned env from the same state; "
                                            "print keypoint/reward errors, optionally write GIF/JSON/PNG.")
    p.add_argument("--system", required=True, choices=ENVIRONMENTS)
    p.add_argument("--checkpoint", default=None, help="run directory (default: the shipped model)")
    p.add_argument("--steps", type=_positive_int, default=200, help="number of actions (default 200)")
    p.add_argument("--seed", type=int, default=0, help="real env reset seed (also the random actions')")
    p.add_argument("--actions", choices=ACTION_KINDS, default="zero")
    p.add_argument("--out", default=None, help="directory for compare.gif/.json/.png")
    p.add_argument("--bank-size", type=_positive_int, default=64,
                   help="the learned env's reset bank (unused here; 64 reuses a run's cached bank)")
    return p


def main(argv: list[str] | None = None) -> int:
    import gymnasium as gym

    from keycld import rundir
    from keycld.systems import get as get_system
    from keycld_gym import SYSTEMS

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is not None and not rundir.is_run(args.checkpoint):
        parser.error(f"--checkpoint {args.checkpoint}: not a run or exported-model directory")
    name = {v: k for k, v in SYSTEMS.items()}[args.system]
    try:
        learned = gym.make(f"KeyCLD-{name}-v0", checkpoint=args.checkpoint, bank_size=args.bank_size)
        real = gym.make(f"KeyCLD-{name}-Real-v0", obs_type="keypoints", checkpoint=args.checkpoint)
        spec = get_system(args.system)
        actions = make_actions(args.actions, args.steps, spec.action_dim, spec.dt, args.seed)
        result = compare(learned, real, actions, seed=args.seed, out=args.out)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    print(json.dumps(result.summary(), indent=1))
    if args.out is not None:
        print(f"wrote {Path(args.out) / 'compare.gif'}, compare.json, compare.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
