"""Vectorised learned environment: one jitted, vmapped step over N environments.

``gym.make_vec("KeyCLD-v0", num_envs=N, vectorization_mode="vector_entry_point",
checkpoint=DIR)`` (or a named id, e.g. ``KeyCLD-Cartpole-v0``) returns :class:`KeyCLDVectorEnv` (Gymnasium's next-step autoreset: the step after an episode
ends resets that environment, ignores its action and returns reward 0). :class:`SB3VecEnv`
adapts the same core to stable-baselines3 (same-step reset, ``terminal_observation`` and
``TimeLimit.truncated`` in the infos).
"""
from __future__ import annotations

from functools import partial

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.vector.utils import batch_space

from keycld_gym import functional as F
from keycld_gym.envs import keypoint_space


@partial(jax.jit, static_argnames=("same_step",))
def vector_step(states: F.EnvState, actions, done, key, params: F.EnvParams, same_step: bool = False):
    """Step N environments, resetting those that are ``done`` (pure; one XLA call).

    Args:
        states: batched EnvState (N, ...); actions: (N, A) in [-1, 1]; done: (N,) bool, the
            environments whose episode ended at the previous step; key: PRNG key for resets.
        same_step: False = Gymnasium next-step autoreset (reset now, ignore the action);
            True = stable-baselines3 style (step, and reset the ones that end in this step).
    Returns:
        (states, obs (N, 4K), rewards (N,), truncated (N,), info dict of (N,) arrays; with
        ``same_step`` the info also holds ``terminal_obs`` (N, 4K)).
    """
    n = actions.shape[0]
    fresh = jax.vmap(F.reset, in_axes=(0, None))(jax.random.split(key, n), params)
    stepped, obs, rew, trunc, info = jax.vmap(F.step, in_axes=(0, 0, None))(states, actions, params)
    pick = lambda mask, a, b: jax.tree_util.tree_map(
        lambda u, v: jnp.where(mask.reshape((-1,) + (1,) * (u.ndim - 1)), u, v), a, b)
    if same_step:
        info["terminal_obs"] = obs
        new = pick(trunc, fresh, stepped)
        return new, jax.vmap(F.observe)(new), rew, trunc, info
    new = pick(done, fresh, stepped)
    rew = jnp.where(done, 0.0, rew)
    trunc = jnp.where(done, False, trunc)
    return new, jax.vmap(F.observe)(new), rew, trunc, info


def check_actions(actions, shape: tuple[int, ...]) -> np.ndarray:
    """Batched actions as float32 (N, A); raise unless finite and inside [-1, 1]."""
    a = np.asarray(actions, np.float32)
    if a.shape != shape:
        raise ValueError(f"actions have shape {a.shape}; expected {shape}")
    if not np.all(np.isfinite(a)) or np.any(np.abs(a) > 1.0):
        raise ValueError("actions must be finite and inside [-1, 1]")
    return a


class KeyCLDVectorEnv(gym.vector.VectorEnv):
    """N copies of a learned KeyCLD environment (``obs_type="keypoints"``) in one jitted step."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, checkpoint=None, obs_type: str = "keypoints", integrator: str = "rk4",
                 substeps: int = 4, bank_size: int | None = None, render_mode: str | None = None,
                 system: str | None = None, **kwargs):
        from keycld_gym.loading import load_env_params

        kwargs.pop("env_id", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if checkpoint is None and system is None:
            raise ValueError("KeyCLD-v0 needs checkpoint=DIR: a run directory of `keycld train` or a model "
                             "exported by `keycld export`")
        if obs_type != "keypoints":
            raise ValueError(f"the vector env supports obs_type 'keypoints' only, got {obs_type!r}")
        if render_mode is not None:
            raise ValueError(f"the vector env does not render, got render_mode={render_mode!r}")
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs, self.render_mode = num_envs, None
        self.params, _ = load_env_params(system, checkpoint, integrator, substeps, bank_size)
        self.system = self.params.model.system.name
        a = self.params.model.system.action_dim
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (a,), np.float32)
        self.single_observation_space = keypoint_space(self.params)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._key = jax.random.PRNGKey(0)
        self._states = None
        self._done = jnp.zeros(num_envs, bool)

    def _next_key(self):
        self._key, sub = jax.random.split(self._key)
        return sub

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}")
        if isinstance(seed, (list, tuple)):
            seed = seed[0]
        if seed is not None:
            self._key = jax.random.PRNGKey(seed)
        keys = jax.random.split(self._next_key(), self.num_envs)
        self._states = jax.vmap(F.reset, in_axes=(0, None))(keys, self.params)
        self._done = jnp.zeros(self.num_envs, bool)
        return np.asarray(jax.vmap(F.observe)(self._states)), {}

    def step(self, actions):
        if self._states is None:
            raise RuntimeError("call reset() before step()")
        a = check_actions(actions, self.action_space.shape)
        self._states, obs, rew, trunc, info = vector_step(self._states, jnp.asarray(a), self._done,
                                                          self._next_key(), self.params)
        self._done = trunc
        infos = {k: np.asarray(v) for k, v in info.items()}
        return (np.asarray(obs), np.asarray(rew), np.zeros(self.num_envs, bool), np.asarray(trunc), infos)


def sb3_vec_env(system: str | None, num_envs: int, checkpoint=None, seed: int = 0, **kwargs):
    """A stable-baselines3 ``VecEnv`` over the same vmapped core (requires the ``rl`` extra)."""
    from stable_baselines3.common.vec_env import VecEnv

    class SB3VecEnv(VecEnv):
        def __init__(self):
            self.inner = KeyCLDVectorEnv(num_envs=num_envs, checkpoint=checkpoint, system=system, **kwargs)
            super().__init__(num_envs, self.inner.single_observation_space, self.inner.single_action_space)
            self._actions = None
            self._seed = seed

        def reset(self):
            obs, _ = self.inner.reset(seed=self._seed)
            self._seed += 1
            return obs

        def step_async(self, actions):
            self._actions = np.asarray(actions, np.float32)

        def step_wait(self):
            inner = self.inner
            a = check_actions(self._actions, inner.action_space.shape)
            inner._states, obs, rew, trunc, info = vector_step(
                inner._states, jnp.asarray(a), inner._done, inner._next_key(), inner.params, same_step=True)
            obs, rew, trunc = np.asarray(obs), np.asarray(rew), np.asarray(trunc)
            term_obs = np.asarray(info.pop("terminal_obs"))
            infos = [{k: np.asarray(v)[i].item() for k, v in info.items()} for i in range(self.num_envs)]
            for i in np.flatnonzero(trunc):
                infos[i]["terminal_observation"] = term_obs[i]
                infos[i]["TimeLimit.truncated"] = True
            return obs, rew, trunc.copy(), infos

        def close(self):
            pass

        def get_attr(self, attr_name, indices=None):
            return [getattr(self.inner, attr_name)] * len(self._indices(indices))

        def set_attr(self, attr_name, value, indices=None):
            setattr(self.inner, attr_name, value)

        def env_method(self, method_name, *args, indices=None, **kwargs):
            raise NotImplementedError("the learned vector env has no per-environment methods")

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * len(self._indices(indices))

        def _indices(self, indices):
            if indices is None:
                return range(self.num_envs)
            return [indices] if isinstance(indices, int) else indices

        def seed(self, seed=None):
            self._seed = seed or 0
            return [seed] * self.num_envs

    return SB3VecEnv()
