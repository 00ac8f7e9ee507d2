"""Gymnasium environments: learned KeyCLD models and the paper's real dm_control tasks.

Both share the action interface (``Box(-1, 1, (A,), float32)``, scaled ×2 to the datasets'
range) and the ``keypoints`` observation, so a policy moves between them unchanged.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces

from keycld.tasks import TASK_SPECS, check_environment
from keycld_gym import functional as F

OBS_TYPES_LEARNED = ("keypoints", "pixels")
OBS_TYPES_REAL = ("state", "pixels", "keypoints")
RENDER_MODES = (None, "rgb_array")


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")


def check_action(action, space: spaces.Box) -> np.ndarray:
    """Validate an action: right shape, finite, inside [-1, 1] (never silently clipped)."""
    a = np.asarray(action, dtype=np.float32)
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


class KeyCLDEnv(gym.Env):
    """A trained KeyCLD model as a Gymnasium environment (see the registered subclasses).

    ## Description
    The state is K keypoints in image coordinates (x right, y up, [-1, 1] spans the 64×64
    image) and their velocities. A step integrates the learned constrained Lagrangian dynamics
    over one control step (dt of the dataset: 0.02 s pendulum, 0.01 s cartpole/acrobot) with
    fixed-step RK4 (4 sub-steps; ``integrator="euler"`` available), then projects back onto the
    constraint manifold Φ(x) = 0 and its tangent space so long rollouts do not drift.

    ## Action Space
    ``Box(-1, 1, (A,), float32)``; each component is multiplied by 2 (the datasets' action
    range, raw MuJoCo control) before it reaches the dynamics. NaN/inf or out-of-range actions
    raise ``ValueError``.

    ## Observation Space
    ``obs_type="keypoints"``: ``[x_1, y_1, …, x_K, y_K, ẋ_1, ẏ_1, …]`` (4K float32) in
    ``Box(±3 image units, ±60 image units/s)``; the state saturates at these bounds
    (``info["saturated"]``). ``obs_type="pixels"``: the learned renderer's 64×64×3 uint8 frame.

    ## Rewards
    dm_control's swing-up reward of the system, computed from the keypoints through the known
    geometry (``keycld_gym.rewards``).

    ## Starting State
    One of a bank of initial states: the real task's swing-up reset, rendered by MuJoCo,
    encoded, central-differenced (64 by default, cached in the run directory). Deterministic
    for a given seed. ``options={"state": [x, ẋ]}`` sets an explicit keypoint state.

    ## Episode End
    Never terminates; truncated after 1000 steps (as in dm_control).

    ## Info
    ``energy`` (total learned energy), ``constraint_residual`` (max |Φ(x)|), ``saturated``.

    ## Arguments
    ``gym.make("KeyCLD-Cartpole-v0", checkpoint=None, obs_type="keypoints",
    render_mode=None, integrator="rk4", substeps=4, bank_size=64)``; ``checkpoint`` is a run
    directory of ``keycld train`` (default: the model shipped for the system).

    ## Version History
    v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    system: str = ""

    def __init__(self, system: str | None = None, checkpoint=None, obs_type: str = "keypoints",
                 render_mode: str | None = None, integrator: str = "rk4", substeps: int = 4,
                 bank_size: int = 64):
        from keycld_gym.loading import load_env_params

        system = system or self.system
        check_environment(system)
        _check("obs_type", obs_type, OBS_TYPES_LEARNED)
        _check("render_mode", render_mode, RENDER_MODES)
        self.system, self.obs_type, self.render_mode = system, obs_type, render_mode
        self.params, self.bank = load_env_params(system, checkpoint, integrator, substeps, bank_size)
        self.metadata = {**self.metadata, "render_fps": int(round(1 / TASK_SPECS[system].dt))}
        a = TASK_SPECS[system].num_actions
        self.action_space = spaces.Box(-1.0, 1.0, (a,), np.float32)
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
        unknown = set(options) - {"state"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: 'state'")
        if "state" in options:
            vec = np.asarray(options["state"], np.float32)
            if vec.shape != (2 * self.params.dim,) or not np.all(np.isfinite(vec)):
                raise ValueError(f"options['state'] must be {2 * self.params.dim} finite floats [x, ẋ], "
                                 f"got shape {vec.shape}")
            space = keypoint_space(self.params)
            if not space.contains(vec):
                raise ValueError(f"options['state'] {vec.tolist()} is outside {space}")
            self._state = F.state_from_vector(jnp.asarray(vec))
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


class KeyCLDPendulumEnv(KeyCLDEnv):
    """Learned pendulum (K = 1 keypoint, A = 1).

    | obs index | meaning                       | unit              |
    |-----------|-------------------------------|-------------------|
    | 0, 1      | bob keypoint x, y             | image units       |
    | 2, 3      | bob keypoint ẋ, ẏ             | image units / s   |

    | action | meaning       | min | max |
    |--------|---------------|-----|-----|
    | 0      | hinge torque  | -1  | 1   | (×2 control, motor gear 2)

    Reward: 1 while the pole is within 8° of upright, else 0 (sparse, dm_control).
    """
    system = "pendulum"


class KeyCLDCartpoleEnv(KeyCLDEnv):
    """Learned cartpole (K = 2 keypoints: 1 = cart, 2 = pole; A = 2).

    | obs index | meaning                          | unit            |
    |-----------|----------------------------------|-----------------|
    | 0–3       | cart x, y; pole x, y             | image units     |
    | 4–7       | their velocities                 | image units / s |

    | action | meaning              | min | max |
    |--------|----------------------|-----|-----|
    | 0      | force on the cart    | -1  | 1   | (×2 control, gear 4)
    | 1      | torque on the pole   | -1  | 1   | (×2 control, gear 1; 0 = stock underactuated)

    Reward: dm_control's smooth swing-up reward (upright · centred · small control · small
    angular velocity).
    """
    system = "cartpole"


class KeyCLDAcrobotEnv(KeyCLDEnv):
    """Learned acrobot (K = 2 keypoints: 1 = upper arm, 2 = lower arm; A = 2).

    | obs index | meaning                          | unit            |
    |-----------|----------------------------------|-----------------|
    | 0–3       | upper x, y; lower x, y           | image units     |
    | 4–7       | their velocities                 | image units / s |

    | action | meaning          | min | max |
    |--------|------------------|-----|-----|
    | 0      | shoulder torque  | -1  | 1   | (×2 control, gear 2)
    | 1      | elbow torque     | -1  | 1   | (×2 control, gear 2)

    Reward: dm_control's smooth reward for the tip reaching the 0.2 m target above the
    shoulder.
    """
    system = "acrobot"


for _cls in (KeyCLDPendulumEnv, KeyCLDCartpoleEnv, KeyCLDAcrobotEnv):
    _cls.__doc__ += "\n    ## Description" + KeyCLDEnv.__doc__.split("## Description", 1)[1]


# ---------------------------------------------------------------------------------------------
# Real environments
# ---------------------------------------------------------------------------------------------
STATE_LAYOUT = {  # dm_control observation keys in order, with their finite bounds
    "pendulum": (("orientation", 1.0), ("velocity", 100.0)),
    "cartpole": (("position", None), ("velocity", 100.0)),
    "acrobot": (("orientations", 1.0), ("velocity", 100.0)),
}
CART_POSITION_LIMIT = 20.0  # metres; the paper's slider is unlimited


class KeyCLDRealEnv(gym.Env):
    """The paper's dm_control swing-up task (``keycld.tasks``) with the learned envs' interface.

    ## Description
    Upstream dm_control with the paper's XML changes, wrapped through shimmy's
    ``DmControlCompatibilityV0``. MuJoCo integrates the true physics.

    ## Action Space
    ``Box(-1, 1, (A,), float32)`` multiplied by 2 before it reaches MuJoCo (the datasets'
    range) — the same as the learned environments. NaN/inf or out-of-range actions raise.

    ## Observation Space
    ``obs_type="state"``: dm_control's observation flattened in key order (pendulum:
    orientation (cos, sin), angular velocity; cartpole: cart position, pole (cos, sin),
    velocities; acrobot: orientations, velocities), float32, velocities within ±100 and the
    cart within ±20 m (the state saturates there, ``info["saturated"]``).
    ``obs_type="pixels"``: the 64×64×3 uint8 frame of camera 0.
    ``obs_type="keypoints"``: the trained encoder (``checkpoint``) on the last three frames:
    ``[x, ẋ]`` with ẋ the backward difference, projected — what a policy sees in the learned env.

    ## Rewards
    dm_control's own swing-up reward.

    ## Starting State
    dm_control's swing-up reset, then two control steps with zero action so that three frames
    exist for the keypoint velocity (done for every obs_type, so episodes are comparable).

    ## Episode End
    Truncated after 1000 steps (dm_control's time limit).

    ## Arguments
    ``gym.make("KeyCLD-Pendulum-Real-v0", obs_type="state", render_mode=None, checkpoint=None)``.

    ## Version History
    v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    system: str = ""

    def __init__(self, system: str | None = None, obs_type: str = "state", render_mode: str | None = None,
                 checkpoint=None):
        from shimmy import DmControlCompatibilityV0

        from keycld.tasks import load_task

        system = system or self.system
        check_environment(system)
        _check("obs_type", obs_type, OBS_TYPES_REAL)
        _check("render_mode", render_mode, RENDER_MODES)
        self.system, self.obs_type, self.render_mode = system, obs_type, render_mode
        self.metadata = {**self.metadata, "render_fps": int(round(1 / TASK_SPECS[system].dt))}
        self._dm = DmControlCompatibilityV0(load_task(system))
        self.physics = self._dm._env.physics
        a = TASK_SPECS[system].num_actions
        self.action_space = spaces.Box(-1.0, 1.0, (a,), np.float32)
        self._frames: list[np.ndarray] = []
        self._keypoints: list[np.ndarray] = []
        self._camera = None  # one reused camera-0 renderer (created on the first frame)
        self._needs_frames = obs_type in ("pixels", "keypoints")  # else render only on demand
        self._started = False
        self.model = None
        if obs_type == "keypoints":
            from keycld_gym.loading import load_model_params
            params = load_model_params(system, checkpoint)
            self.model, self.weights = params.model, params.weights
            self.constraint_offset = params.constraint_offset
            self.observation_space = keypoint_space(params)
        elif obs_type == "pixels":
            self.observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        else:
            self.observation_space = self._state_space()

    def _state_space(self) -> spaces.Box:
        lows, highs = [], []
        for key, bound in STATE_LAYOUT[self.system]:
            n = int(np.prod(self._dm._env.observation_spec()[key].shape))
            if key == "position":  # cartpole: [cart, cos, sin]
                hi = np.array([CART_POSITION_LIMIT] + [1.0] * (n - 1))
            else:
                hi = np.full(n, bound)
            lows.append(-hi)
            highs.append(hi)
        return spaces.Box(np.concatenate(lows).astype(np.float32), np.concatenate(highs).astype(np.float32),
                          dtype=np.float32)

    def _frame(self) -> np.ndarray:
        if self._camera is None:
            from keycld.tasks import CameraRenderer
            self._camera = CameraRenderer(self.physics)
        return self._camera()

    def _observe(self, dm_obs) -> tuple[np.ndarray, bool]:
        if self.obs_type == "pixels":
            return self._frames[-1], False
        if self.obs_type == "keypoints":
            from keycld_gym.loading import backward_state, encode_keypoints
            new = self._frames[-1:] if self._keypoints else self._frames  # one new frame per step
            self._keypoints = (self._keypoints + list(encode_keypoints(self.model, self.weights, np.stack(new))))[-3:]
            obs = backward_state(self.model, np.stack(self._keypoints), self.constraint_offset).astype(np.float32)
        else:
            obs = np.concatenate([np.ravel(dm_obs[k]) for k, _ in STATE_LAYOUT[self.system]]).astype(np.float32)
        clipped = np.clip(obs, self.observation_space.low, self.observation_space.high)
        return clipped, bool(np.any(clipped != obs))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; the real envs take none")
        dm_seed = int(self.np_random.integers(0, 2 ** 31 - 1))
        self._dm.reset(seed=dm_seed)
        zero = np.zeros(self.action_space.shape)
        self._frames = [self._frame()] if self._needs_frames else []
        self._keypoints = []  # keypoints of the last frames (obs_type keypoints)
        for _ in range(2):
            dm_obs, *_ = self._dm.step(zero)
            if self._needs_frames:
                self._frames.append(self._frame())
        self._started = True
        obs, saturated = self._observe(dm_obs)
        return obs, {"saturated": saturated, "qpos": self.physics.data.qpos.copy(),
                     "qvel": self.physics.data.qvel.copy()}

    def step(self, action):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = check_action(action, self.action_space)
        dm_obs, reward, terminated, truncated, _ = self._dm.step(a.astype(np.float64) * 2.0)
        if self._needs_frames:
            self._frames = self._frames[-2:] + [self._frame()]
        obs, saturated = self._observe(dm_obs)
        return obs, float(reward), bool(terminated), bool(truncated), {
            "saturated": saturated, "qpos": self.physics.data.qpos.copy(), "qvel": self.physics.data.qvel.copy()}

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; use render_mode='rgb_array'")
            return None
        if not self._started:
            raise RuntimeError("call reset() before render()")
        return self._frames[-1] if self._needs_frames else self._frame()


class KeyCLDPendulumRealEnv(KeyCLDRealEnv):
    """The paper's pendulum swing-up (MuJoCo), same interface as ``KeyCLD-Pendulum-v0``.
    """
    system = "pendulum"


class KeyCLDCartpoleRealEnv(KeyCLDRealEnv):
    """The paper's cartpole swing-up (MuJoCo, pole actuated), same interface as ``KeyCLD-Cartpole-v0``.
    """
    system = "cartpole"


class KeyCLDAcrobotRealEnv(KeyCLDRealEnv):
    """The paper's acrobot swing-up (MuJoCo, both joints actuated), same interface as ``KeyCLD-Acrobot-v0``.
    """
    system = "acrobot"


for _cls in (KeyCLDPendulumRealEnv, KeyCLDCartpoleRealEnv, KeyCLDAcrobotRealEnv):
    _cls.__doc__ += "\n    ## Description" + KeyCLDRealEnv.__doc__.split("## Description", 1)[1]
