"""The learned environment: any trained KeyCLD model as a Gymnasium environment.

``gym.make("KeyCLD-v0", checkpoint=DIR)`` works for every run or exported-model directory; the
System stored with the model gives the spaces, dt, reward and constraint. The paper's named
ids (``KeyCLD-Pendulum-v0`` …) are this class with a shipped default checkpoint
(``keycld_gym.paper``, which also holds the real dm_control tasks). Every env shares the action
interface ``Box(-1, 1, (A,), float32)`` (× ``System.action_scale`` to the data's units).
"""
from __future__ import annotations

import operator
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces

from keycld_gym import functional as F
from keycld_gym.forking import ForkSafe

OBS_TYPES_LEARNED = ("keypoints", "pixels")
RESET_OPTIONS = ("state", "frames")
RENDER_MODES = (None, "rgb_array")


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")


def real_array(value, what: str) -> np.ndarray:
    """``value`` as a float32 array; ValueError unless it holds real numbers (bool, int or float:
    complex, strings and objects are refused, never converted)."""
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be real numbers (int or float), got dtype {a.dtype}")
    return a.astype(np.float32)


def check_count(name: str, value, low: int) -> int:
    """An integer >= ``low`` (bool and non-integers refused), else ValueError naming ``name``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}") from None
    if n < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {n}")
    return n


def check_action(action, space: spaces.Box) -> np.ndarray:
    """Validate an action: real numbers, right shape, finite, inside [-1, 1] (never silently clipped)."""
    a = real_array(action, "action")
    if a.shape != space.shape:
        raise ValueError(f"action has shape {a.shape}; expected {space.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action {a.tolist()} is not finite; allowed: values in [-1, 1]")
    if np.any(a < -1.0) or np.any(a > 1.0):
        raise ValueError(f"action {a.tolist()} is outside the action space [-1, 1]")
    return a


def keypoint_space(params: F.EnvParams) -> spaces.Box:
    d = params.dim
    high = np.concatenate([np.full(d, params.position_limit), np.full(d, params.velocity_limit)]).astype(np.float32)
    return spaces.Box(-high, high, dtype=np.float32)


_step = jax.jit(F.step)
_render = jax.jit(F.render)
_reset = jax.jit(F.reset)
_snap = jax.jit(F.snap_to_manifold)


def check_frames(frames, what: str = "options['frames']") -> np.ndarray:
    """Three camera frames for an encoded start: uint8 (3, 64, 64, 3), else ValueError."""
    f = np.asarray(frames)
    if f.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 RGB frames, got dtype {f.dtype}")
    if f.shape != (3, 64, 64, 3):
        raise ValueError(f"{what} must have shape (3, 64, 64, 3) (three consecutive 64×64 RGB frames), "
                         f"got {f.shape}")
    return f


def on_manifold(state: F.EnvState, params: F.EnvParams) -> F.EnvState:
    """:func:`keycld_gym.functional.snap_to_manifold`, jitted."""
    return _snap(state, params)


def check_state(vec, params: F.EnvParams, what: str = "options['state']") -> np.ndarray:
    """A keypoint state [x, ẋ] (4K,) inside the observation space, else ValueError."""
    v = real_array(vec, what)
    d = 2 * params.dim
    if v.shape != (d,):
        raise ValueError(f"{what} must be {d} finite floats [x, ẋ], got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what} {v.tolist()} is not finite; allowed: {d} finite floats [x, ẋ]")
    space = keypoint_space(params)
    if not space.contains(v):
        raise ValueError(f"{what} {v.tolist()} is outside {space}")
    return v


class KeyCLDEnv(ForkSafe, gym.Env):
    """A trained KeyCLD model as a Gymnasium environment.

    ## Description
    The state is K keypoints in image coordinates (x right, y up, [-1, 1] spans the 64×64
    image) and their velocities. A step integrates the learned constrained Lagrangian dynamics
    over one control step (the System's dt) with fixed-step RK4 (4 sub-steps;
    ``integrator="euler"`` available), then projects back onto the constraint manifold
    Φ(x) = c and its tangent space so long rollouts do not drift.

    ## Action Space
    ``Box(-1, 1, (A,), float32)``; multiplied by the System's ``action_scale`` (the data's
    action units) before it reaches the dynamics. NaN/inf, out-of-range or non-real actions raise
    ``ValueError`` (nothing is clipped silently); for a policy that samples unbounded actions
    (e.g. a Gaussian), wrap the env in ``gymnasium.wrappers.ClipAction``.

    ## Observation Space
    ``obs_type="keypoints"``: ``[x_1, y_1, …, x_K, y_K, ẋ_1, ẏ_1, …]`` (4K float32) in
    ``Box(±3 image units, ±60 image units/s)``; the state saturates at these bounds
    (``info["saturated"]``). ``obs_type="pixels"``: the learned renderer's 64×64×3 uint8 frame.

    ## Rewards
    The System's reward of the keypoint state and the action (0 when it has none); for the
    paper's tasks dm_control's swing-up reward through the known geometry.

    ## Starting State
    One of a bank of encoded initial states shipped with the model (the paper's tasks: real
    swing-up resets; your own system: the first frames of the training runs). Deterministic
    for a given seed. ``options={"state": [x, ẋ]}`` starts from a keypoint state (projected
    onto the manifold); ``options={"frames": F}``, F uint8 (3, 64, 64, 3) three consecutive
    camera frames, starts where the encoder puts them (central difference, middle frame: the
    VPT protocol).

    ## Episode End
    Never terminates; truncated after ``max_episode_steps`` (1000) steps, as dm_control's tasks
    (the registered ids carry the same limit: ``env.spec.max_episode_steps``).

    ## Info
    ``energy`` (total learned energy), ``constraint_residual`` (max |Φ(x) − c|), ``saturated``.

    ## Arguments
    ``gym.make("KeyCLD-v0", checkpoint=DIR, obs_type="keypoints", render_mode=None,
    integrator="rk4", substeps=None, bank_size=None, max_episode_steps=1000)``; ``checkpoint`` is a run
    directory of ``keycld train`` or an exported model (``keycld export``); ``substeps`` None takes
    the number of RK4 sub-steps measured at export (``model.json``), 4 for a training run.
    ``env.unwrapped.model_info`` says which model runs (directory, model version, weights'
    SHA-256); the named ids also carry ``model_version`` and ``weights_sha256`` in
    ``env.spec.kwargs`` and refuse a shipped model that is not the one the id names.

    ## Version History
    The id's version is the shipped model's version: a replaced model is registered under the
    next version (``-v1``), and the older id raises, naming the release that shipped it.
    v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    system: str = ""  # the paper's named ids set this: the shipped model of that system

    def __init__(self, checkpoint=None, obs_type: str = "keypoints", render_mode: str | None = None,
                 integrator: str = "rk4", substeps: int | None = None, bank_size: int | None = None,
                 system: str | None = None, max_episode_steps: int = 1000, model_version: int | None = None,
                 weights_sha256: str | None = None):
        from keycld_gym.loading import load_env_params, model_identity

        system = system or self.system or None
        check_choice("obs_type", obs_type, OBS_TYPES_LEARNED)
        check_choice("render_mode", render_mode, RENDER_MODES)
        if checkpoint is None and system is None:
            raise ValueError("KeyCLD-v0 needs checkpoint=DIR: a run directory of `keycld train` or a model "
                             "exported by `keycld export`")
        self.obs_type, self.render_mode = obs_type, render_mode
        max_steps = check_count("max_episode_steps", max_episode_steps, 1)
        params, self.bank = load_env_params(system, checkpoint, integrator, substeps, bank_size)
        self.model_info = model_identity(system, checkpoint, model_version, weights_sha256)
        self.params = params.replace(max_steps=max_steps)
        spec = self.params.model.system
        self.system = spec.name
        self.metadata = {**self.metadata, "render_fps": int(round(1 / spec.dt))}
        self.action_space = spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)
        self.observation_space = (keypoint_space(self.params) if obs_type == "keypoints"
                                  else spaces.Box(0, 255, (64, 64, 3), np.uint8))
        self._state: F.EnvState | None = None

    @property
    def state(self) -> F.EnvState | None:
        """The current functional state (None before ``reset``)."""
        return self._state

    def _obs(self) -> np.ndarray:
        if self.obs_type == "pixels":
            return np.asarray(_render(self._state, self.params))
        return np.asarray(F.observe(self._state))

    def _info(self) -> dict[str, Any]:
        return {"energy": float(F.energy(self._state, self.params)),
                "constraint_residual": float(F.constraint_residual(self._state, self.params))}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - set(RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: one of {', '.join(RESET_OPTIONS)}")
        if len(options) > 1:
            raise ValueError(f"reset options {' and '.join(sorted(options))} exclude each other; give one")
        if "state" in options:
            vec = check_state(options["state"], self.params)
            self._state = on_manifold(F.state_from_vector(jnp.asarray(vec)), self.params)
        elif "frames" in options:
            from keycld_gym.loading import encode_central
            frames = check_frames(options["frames"])
            vec = encode_central(self.params.model, self.params.weights, frames, self.params.constraint_offset)
            self._state = F.state_from_vector(jnp.asarray(vec, jnp.float32))
        else:
            key = jax.random.PRNGKey(int(self.np_random.integers(0, 2 ** 31 - 1)))
            self._state = _reset(key, self.params)
        return self._obs(), self._info()

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = check_action(action, self.action_space)
        self._state, obs, reward, truncated, info = _step(self._state, jnp.asarray(a), self.params)
        out = self._obs() if self.obs_type == "pixels" else np.asarray(obs)
        info = {k: (bool(v) if k == "saturated" else float(v)) for k, v in info.items()}
        return out, float(reward), False, bool(truncated), info

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; use render_mode='rgb_array'")
            return None
        if self._state is None:
            raise RuntimeError("call reset() before render()")
        return np.asarray(_render(self._state, self.params))
