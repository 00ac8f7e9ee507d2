"""The learned environment as a Gymnasium ``FuncEnv`` over the functional core.

:class:`KeyCLDFuncEnv` is ``gymnasium.experimental.functional.FuncEnv`` for
``gymnasium.envs.functional_jax_env.FunctionalJaxEnv`` (one environment) and
``FunctionalJaxVectorEnv`` (N environments, vmapped)::

    from gymnasium.envs.functional_jax_env import FunctionalJaxEnv, FunctionalJaxVectorEnv
    func_env = KeyCLDFuncEnv.load("pendulum")              # or a run / export directory
    env = FunctionalJaxEnv(func_env, render_mode="rgb_array")
    venv = FunctionalJaxVectorEnv(KeyCLDFuncEnv.load("pendulum"), num_envs=8, max_episode_steps=1000)

The FuncEnv state is the keypoint state vector [x, ẋ] (4K,) float32, which is also the
observation: the vector env indexes its state as one array (``state.at[i].set(...)``), so it
cannot be a pytree. ``transition`` is :func:`keycld_gym.functional.step` from that vector,
``initial`` is :func:`keycld_gym.functional.reset`, ``reward`` is
:func:`keycld_gym.functional.reward` of the next state. The learned env never terminates; its
episode length is not part of the FuncEnv (FunctionalJaxEnv never truncates: wrap it in
``gymnasium.wrappers.TimeLimit``; FunctionalJaxVectorEnv truncates at ``max_episode_steps``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from gymnasium.experimental.functional import FuncEnv

from keycld import rundir
from keycld_gym import SYSTEMS
from keycld_gym import functional as F
from keycld_gym.envs import check_action, keypoint_space

BUILTIN_SYSTEMS = tuple(SYSTEMS.values())  # names make() and load() take for the shipped models


def load_core_params(system_or_checkpoint: str | os.PathLike, integrator: str = "rk4",
                     substeps: int | None = None, bank_size: int | None = None) -> F.EnvParams:
    """The core's :class:`~keycld_gym.functional.EnvParams` of a built-in system's shipped model
    (a name in ``BUILTIN_SYSTEMS``, given as a str) or of a run / exported-model directory.
    ``integrator``, ``substeps`` (None: the model's recorded sub-step count) and ``bank_size``
    as for :func:`keycld_gym.loading.load_env_params`."""
    from keycld_gym.loading import load_env_params

    if isinstance(system_or_checkpoint, str) and system_or_checkpoint in BUILTIN_SYSTEMS:
        system, checkpoint = system_or_checkpoint, None
    elif isinstance(system_or_checkpoint, (str, os.PathLike)):
        system, checkpoint = None, Path(system_or_checkpoint)
        if not rundir.is_run(checkpoint):
            raise ValueError(f"{str(system_or_checkpoint)!r} is neither a built-in system "
                             f"({', '.join(map(repr, BUILTIN_SYSTEMS))}) nor a run or exported-model directory")
    else:
        raise ValueError(f"system_or_checkpoint must be a built-in system name "
                         f"({', '.join(map(repr, BUILTIN_SYSTEMS))}) or a directory path, got {system_or_checkpoint!r}")
    params, _ = load_env_params(system, checkpoint, integrator, substeps, bank_size)
    return params


def check_traced_action(action, action_dim: int) -> jnp.ndarray:
    """``action`` as float32 (A,). Its dtype and shape are checked always (ValueError); its values
    (finite, in [-1, 1]) only when it is concrete: under jit or vmap they pass to
    :func:`keycld_gym.functional.step` unchanged (never clipped)."""
    if isinstance(action, jax.core.Tracer):
        if action.shape != (action_dim,):
            raise ValueError(f"action has shape {action.shape}; expected ({action_dim},)")
        if not (jnp.issubdtype(action.dtype, jnp.integer) or jnp.issubdtype(action.dtype, jnp.floating)):
            raise ValueError(f"action must be real numbers (int or float), got dtype {action.dtype}")
        return action.astype(jnp.float32)
    return jnp.asarray(check_action(action, spaces.Box(-1.0, 1.0, (action_dim,), np.float32)))


class KeyCLDFuncEnv(FuncEnv):
    """A learned KeyCLD environment as a Gymnasium FuncEnv (state = observation = [x, ẋ] (4K,)).

    Args:
        params: the core's parameters (``load_core_params`` or
            ``keycld_gym.loading.load_env_params``); every method's ``params`` defaults to them.

    ``observation_space``: ``Box`` of the state limits (4K,); ``action_space``: ``Box(-1, 1, (A,))``.
    Randomness: ``initial`` draws a bank state with ``rng``; the other methods ignore ``rng``.
    ``render_image`` draws (64, 64, 3) uint8 images through the learned renderer, (N, 64, 64, 3)
    for a batch of states (the vector env); it needs no render state (``render_init`` gives None).
    """

    def __init__(self, params: F.EnvParams):
        if not isinstance(params, F.EnvParams):
            raise ValueError(f"params must be a keycld_gym.functional.EnvParams, got {type(params).__name__}")
        self._params = params
        self.action_dim = params.model.system.action_dim
        self.observation_space = keypoint_space(params)
        self.action_space = spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        super().__init__()

    @classmethod
    def load(cls, system_or_checkpoint: str | os.PathLike, integrator: str = "rk4",
             substeps: int | None = None, bank_size: int | None = None) -> "KeyCLDFuncEnv":
        """The FuncEnv of a built-in system's shipped model or of a run / export directory."""
        return cls(load_core_params(system_or_checkpoint, integrator, substeps, bank_size))

    def get_default_params(self, **kwargs) -> F.EnvParams:
        return self._params

    def _p(self, params: F.EnvParams | None) -> F.EnvParams:
        return self.default_params if params is None else params

    def initial(self, rng: jax.Array, params: F.EnvParams | None = None) -> jnp.ndarray:
        """A state of the reset bank drawn with ``rng``: [x, ẋ] (4K,)."""
        return _initial(rng, self._p(params))

    def transition(self, state: jnp.ndarray, action, rng: Any = None, params: F.EnvParams | None = None) -> jnp.ndarray:
        """The next state [x, ẋ] (4K,) after one control step with ``action`` (A,) in [-1, 1]."""
        return _transition(state, check_traced_action(action, self.action_dim), self._p(params))

    def observation(self, state: jnp.ndarray, rng: Any = None, params: F.EnvParams | None = None) -> jnp.ndarray:
        return state

    def reward(self, state: jnp.ndarray, action, next_state: jnp.ndarray, rng: Any = None,
               params: F.EnvParams | None = None) -> jnp.ndarray:
        """The System's reward of ``next_state`` and the control ``action`` × action_scale
        (the reward :func:`keycld_gym.functional.step` returns for this transition)."""
        return _reward(next_state, check_traced_action(action, self.action_dim), self._p(params))

    def terminal(self, state: jnp.ndarray, rng: Any = None, params: F.EnvParams | None = None) -> jnp.ndarray:
        """Always False: the learned env has no terminal states."""
        return jnp.zeros((), bool)

    def transition_info(self, state: jnp.ndarray, action, next_state: jnp.ndarray,
                        params: F.EnvParams | None = None) -> dict:
        """``energy`` and ``constraint_residual`` of ``next_state`` (4K,), or (N,) arrays of them
        for a batch (N, 4K): FunctionalJaxVectorEnv calls this method on the whole batch."""
        return _per_row(_info, next_state, self._p(params))

    def render_init(self, params: F.EnvParams | None = None, **kwargs) -> None:
        return None

    def render_image(self, state: jnp.ndarray, render_state: None = None,
                     params: F.EnvParams | None = None) -> tuple[None, np.ndarray]:
        return render_state, np.asarray(_per_row(_render, state, self._p(params)))

    def render_close(self, render_state: None, params: F.EnvParams | None = None) -> None:
        return None


@jax.jit
def _initial(rng: jax.Array, params: F.EnvParams) -> jnp.ndarray:
    return F.observe(F.reset(rng, params))


@jax.jit
def _transition(vec: jnp.ndarray, action: jnp.ndarray, params: F.EnvParams) -> jnp.ndarray:
    return F.observe(F.step(F.state_from_vector(vec), action, params)[0])


@jax.jit
def _reward(next_vec: jnp.ndarray, action: jnp.ndarray, params: F.EnvParams) -> jnp.ndarray:
    return F.reward(F.state_from_vector(next_vec), action * params.action_scale, params)


def _info(vec: jnp.ndarray, params: F.EnvParams) -> dict:
    state = F.state_from_vector(vec)
    return {"energy": F.energy(state, params), "constraint_residual": F.constraint_residual(state, params)}


def _render(vec: jnp.ndarray, params: F.EnvParams) -> jnp.ndarray:
    return F.render(F.state_from_vector(vec), params)


_ONE = {fn: jax.jit(fn) for fn in (_info, _render)}
_BATCH = {fn: jax.jit(jax.vmap(fn, in_axes=(0, None))) for fn in (_info, _render)}


def _per_row(fn, vec, params: F.EnvParams):
    """``fn(vec, params)`` of one state vector (4K,), or vmapped over a batch (N, 4K)."""
    vec = jnp.asarray(vec)
    return (_ONE if vec.ndim == 1 else _BATCH)[fn](vec, params)
