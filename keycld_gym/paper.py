"""The paper's three systems as environments: learned models with shipped defaults, and the
real dm_control tasks (MuJoCo) with the paper's physics.

``KeyCLD-{Pendulum,Cartpole,Acrobot}-v0`` are :class:`keycld_gym.envs.KeyCLDEnv` with the shipped
model of the system as default checkpoint; ``KeyCLD-*-Real-v0`` are :class:`KeyCLDRealEnv`,
which share their action interface and, with ``obs_type="keypoints"``, their observation.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from keycld.systems import get as get_system
from keycld_gym.envs import RENDER_MODES, KeyCLDEnv, check_action, check_choice, check_count, keypoint_space
from keycld_gym.forking import ForkSafe
from keycld_gym.vector import KeyCLDVectorEnv

OBS_TYPES_REAL = ("state", "pixels", "keypoints")


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


def retired_model(env_id: str, weights_sha256: str, release: str, current_id: str, **kwargs):
    """Entry point of an id whose shipped model was replaced: raises, naming the release."""
    raise gym.error.Error(f"{env_id} ran a shipped model (weights SHA-256 {weights_sha256[:12]}…) that this "
                          f"installation no longer ships; it is in keycld-gym {release} "
                          f"(pip install keycld-gym=={release}). This installation's model is {current_id}.")


class KeyCLDPendulumVectorEnv(KeyCLDVectorEnv):
    def __init__(self, num_envs: int = 1, **kwargs):
        super().__init__(num_envs=num_envs, system="pendulum", **kwargs)


class KeyCLDCartpoleVectorEnv(KeyCLDVectorEnv):
    def __init__(self, num_envs: int = 1, **kwargs):
        super().__init__(num_envs=num_envs, system="cartpole", **kwargs)


class KeyCLDAcrobotVectorEnv(KeyCLDVectorEnv):
    def __init__(self, num_envs: int = 1, **kwargs):
        super().__init__(num_envs=num_envs, system="acrobot", **kwargs)




# ---------------------------------------------------------------------------------------------
# Real environments
# ---------------------------------------------------------------------------------------------
STATE_LAYOUT = {  # dm_control observation keys in order, with their finite bounds
    "pendulum": (("orientation", 1.0), ("velocity", 100.0)),
    "cartpole": (("position", None), ("velocity", 100.0)),
    "acrobot": (("orientations", 1.0), ("velocity", 100.0)),
}
CART_POSITION_LIMIT = 20.0  # metres; the paper's slider is unlimited


class KeyCLDRealEnv(ForkSafe, gym.Env):
    """The paper's dm_control swing-up task (``keycld.tasks``) with the learned envs' interface.

    ## Description
    Upstream dm_control with the paper's XML changes, wrapped through shimmy's
    ``DmControlCompatibilityV0``. MuJoCo integrates the true physics.

    ## Action Space
    ``Box(-1, 1, (A,), float32)`` multiplied by 2 before it reaches MuJoCo (the datasets'
    range) — the same as the learned environments. NaN/inf or out-of-range actions raise
    (``gymnasium.wrappers.ClipAction`` bounds an unbounded policy).

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
    Truncated after ``max_episode_steps`` (1000, dm_control's limit) steps counted from the end
    of ``reset`` (the two start steps do not count), as the registered ids' time limit.

    ## Arguments
    ``gym.make("KeyCLD-Pendulum-Real-v0", obs_type="state", render_mode=None, checkpoint=None,
    max_episode_steps=1000)``. The env pickles (also after rendering).

    ## Version History
    v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    system: str = ""

    @classmethod
    def _uses_jax(cls, kwargs) -> bool:
        return kwargs.get("obs_type") == "keypoints"  # the encoder; MuJoCo alone is fork-safe

    def __init__(self, system: str | None = None, obs_type: str = "state", render_mode: str | None = None,
                 checkpoint=None, max_episode_steps: int = 1000):
        from shimmy import DmControlCompatibilityV0

        from keycld.tasks import load_task

        system = system or self.system
        spec = get_system(system)
        check_choice("obs_type", obs_type, OBS_TYPES_REAL)
        check_choice("render_mode", render_mode, RENDER_MODES)
        self.system, self.obs_type, self.render_mode = system, obs_type, render_mode
        self.max_episode_steps = check_count("max_episode_steps", max_episode_steps, 1)
        self.elapsed_steps = 0
        self.metadata = {**self.metadata, "render_fps": int(round(1 / spec.dt))}
        self._dm = DmControlCompatibilityV0(load_task(system, time_limit=float("inf")))
        self.physics = self._dm._env.physics
        self.action_scale = spec.action_scale
        self.action_space = spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)
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
        self.elapsed_steps = 0
        obs, saturated = self._observe(dm_obs)
        return obs, {"saturated": saturated, "qpos": self.physics.data.qpos.copy(),
                     "qvel": self.physics.data.qvel.copy()}

    def step(self, action):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = check_action(action, self.action_space)
        dm_obs, reward, terminated, _, _ = self._dm.step(a.astype(np.float64) * self.action_scale)
        self.elapsed_steps += 1
        truncated = self.elapsed_steps >= self.max_episode_steps
        if self._needs_frames:
            self._frames = self._frames[-2:] + [self._frame()]
        obs, saturated = self._observe(dm_obs)
        return obs, float(reward), bool(terminated), bool(truncated), {
            "saturated": saturated, "qpos": self.physics.data.qpos.copy(), "qvel": self.physics.data.qvel.copy()}

    @property
    def remaining_steps(self) -> int:
        """Steps left in the current episode."""
        return self.max_episode_steps - self.elapsed_steps

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_camera"] = None  # MuJoCo's scene does not pickle; the next frame rebuilds it
        return state

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
