"""The learned environment as a gymnax environment over the functional core.

``env, env_params = keycld_gym.gymnax.make("pendulum")`` (or a run / export directory) gives a
``gymnax.environments.environment.Environment`` subclass, so JAX RL code written for gymnax runs
unchanged::

    obs, state = env.reset(key, env_params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, env_params)

``step`` and ``reset`` are gymnax's own (jitted, with its return convention and same-step
auto-reset: the step whose state reaches ``max_steps_in_episode`` returns the reward of that
transition, ``truncated`` True, the observation and state of a fresh reset drawn with the second
half of ``jax.random.split(key)``, and the last observation of the episode as
``info["final_observation"]``). This module implements ``step_env`` as
:func:`keycld_gym.functional.step` and ``reset_env`` as :func:`keycld_gym.functional.reset`.

Params: :class:`GymnaxParams` wraps the core's :class:`~keycld_gym.functional.EnvParams`
(``core``: weights and reset bank as pytree leaves, model and integrator settings static) and
holds gymnax's ``max_steps_in_episode`` as a pytree leaf, so
``env_params.replace(max_steps_in_episode=N)`` takes effect without retracing. The state is the
core's :class:`~keycld_gym.functional.EnvState` (x, ẋ (2K,) each, t int32). Truncation is
``state.t >= max_steps_in_episode`` (gymnax's ``is_truncated``); the core's own ``max_steps`` is
set to the same value by :func:`make`. As in gymnax, transitions are detached from the autodiff
graph unless ``env.with_transition_gradients()`` is used.

gymnax is an optional dependency (``pip install keycld-gym[gymnax]``); this module imports it
only when :func:`make` (or ``KeyCLDGymnaxEnv``) is used.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from keycld_gym import functional as F
from keycld_gym.envs import check_count, keypoint_space
from keycld_gym.funcenv import check_traced_action, load_core_params

EXTRA = "pip install keycld-gym[gymnax]"


@struct.dataclass
class GymnaxParams:
    """gymnax params of a learned env: the core's EnvParams and the episode length (steps)."""

    core: F.EnvParams
    max_steps_in_episode: int | jax.Array = 1000


def _gymnax():
    """gymnax's ``environment`` and ``spaces`` modules; ImportError naming the extra if missing."""
    try:
        from gymnax.environments import environment, spaces
    except ImportError as err:
        raise ImportError(f"keycld_gym.gymnax needs the optional dependency gymnax, which does not import "
                          f"({err}); install it with `{EXTRA}`") from err
    return environment, spaces


class _Adapter:
    """gymnax's hooks on the functional core (the methods of ``KeyCLDGymnaxEnv``)."""

    _supports_transition_gradients = True  # functional.step differentiates w.r.t. state and action

    def __init__(self, params: GymnaxParams):
        self._params = params

    @property
    def default_params(self) -> GymnaxParams:
        return self._params

    def _p(self, params: GymnaxParams | None) -> GymnaxParams:
        return self._params if params is None else params

    def step_env(self, key: jax.Array, state: F.EnvState, action: Any, params: GymnaxParams):
        """One control step: (obs (4K,), state, reward, terminated (always False), info with
        ``energy``, ``constraint_residual``, ``saturated``). Action (A,) in [-1, 1]: shape checked
        at trace time, values passed to the core unchanged (never clipped)."""
        a = check_traced_action(action, self.num_actions)
        new, obs, reward, _, info = F.step(state, a, params.core)
        obs, new = self._apply_transition_gradient_policy(obs, new)
        return obs, new, reward, jnp.zeros((), bool), info

    def reset_env(self, key: jax.Array, params: GymnaxParams) -> tuple[jax.Array, F.EnvState]:
        state = F.reset(key, params.core)
        return F.observe(state), state

    def get_obs(self, state: F.EnvState, params: GymnaxParams | None = None, key: jax.Array | None = None):
        return F.observe(state)

    def is_terminated(self, state: F.EnvState, params: GymnaxParams) -> jax.Array:
        return jnp.zeros((), bool)

    def is_truncated(self, state: F.EnvState, params: GymnaxParams) -> jax.Array:
        """The episode ends when ``state.t`` (steps since reset) reaches ``max_steps_in_episode``."""
        return state.t >= params.max_steps_in_episode

    def render(self, state: F.EnvState, params: GymnaxParams) -> jax.Array:
        """(64, 64, 3) uint8 image through the learned renderer."""
        return F.render(state, params.core)

    @property
    def name(self) -> str:
        return f"KeyCLD-{self._params.core.model.system.name}"

    @property
    def num_actions(self) -> int:
        """The action dimension A (continuous actions)."""
        return self._params.core.model.system.action_dim

    def action_space(self, params: GymnaxParams | None = None):
        """``Box(-1, 1, (A,), float32)``."""
        return _gymnax()[1].Box(-1.0, 1.0, (self.num_actions,), jnp.float32)

    def observation_space(self, params: GymnaxParams | None = None):
        """``Box`` of [x, ẋ] (4K,): ±position_limit for x, ±velocity_limit for ẋ."""
        box = keypoint_space(self._p(params).core)
        return _gymnax()[1].Box(jnp.asarray(box.low), jnp.asarray(box.high), box.shape, jnp.float32)

    def state_space(self, params: GymnaxParams | None = None):
        """``Dict`` of x, xd (Box of the limits) and t (Discrete(max_steps_in_episode + 1))."""
        p = self._p(params)
        spaces, core = _gymnax()[1], p.core
        return spaces.Dict({"x": spaces.Box(-core.position_limit, core.position_limit, (core.dim,), jnp.float32),
                            "xd": spaces.Box(-core.velocity_limit, core.velocity_limit, (core.dim,), jnp.float32),
                            "t": spaces.Discrete(int(p.max_steps_in_episode) + 1)})


@functools.cache
def environment_class() -> type:
    """``KeyCLDGymnaxEnv``: the adapter as a subclass of gymnax's ``Environment``."""
    environment, _ = _gymnax()
    return type("KeyCLDGymnaxEnv", (_Adapter, environment.Environment),
                {"__module__": __name__, "__qualname__": "KeyCLDGymnaxEnv",
                 "__doc__": "A learned KeyCLD environment as a gymnax Environment (see keycld_gym.gymnax)."})


def __getattr__(name: str):
    if name == "KeyCLDGymnaxEnv":
        return environment_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make(system_or_checkpoint: str | os.PathLike, *, integrator: str = "rk4", substeps: int | None = None,
         bank_size: int | None = None, max_steps: int = 1000) -> tuple[Any, GymnaxParams]:
    """(env, env_params) of a learned environment for gymnax-style JAX code.

    Args:
        system_or_checkpoint: a built-in system (``"pendulum"``, ``"cartpole"``, ``"acrobot"``:
            its shipped model) or a run / exported-model directory.
        integrator, substeps, bank_size: as for :func:`keycld_gym.loading.load_env_params`
            (substeps None: the model's recorded sub-step count).
        max_steps: episode length in control steps (``env_params.max_steps_in_episode``).
    Raises:
        ImportError naming the extra when gymnax is not installed; ValueError for a bad argument.
    """
    _gymnax()
    max_steps = check_count("max_steps", max_steps, 1)
    core = load_core_params(system_or_checkpoint, integrator, substeps, bank_size).replace(max_steps=max_steps)
    env = environment_class()(GymnaxParams(core, max_steps))
    return env, env.default_params
