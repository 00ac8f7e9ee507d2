"""Vectorised learned environment: one jitted, vmapped step over N environments.

``gym.make_vec("KeyCLD-v0", num_envs=N, checkpoint=DIR)`` (or a named id, e.g.
``KeyCLD-Cartpole-v0``) returns :class:`KeyCLDVectorEnv`. Its autoreset mode is a constructor
argument (Gymnasium's next-step default, same-step, or disabled); it renders the first
``render_envs`` environments through the vmapped learned renderer (for
``gymnasium.wrappers.vector.RecordVideo``), and resets take per-environment seeds, start states,
start frames and a reset mask. :func:`sb3_vec_env` adapts the same core to stable-baselines3
(same-step reset, ``terminal_observation`` and ``TimeLimit.truncated`` in the infos,
``get_images`` for ``VecVideoRecorder``).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from keycld_gym import functional as F
from keycld_gym.envs import check_count, check_frames, check_state, keypoint_space, real_array

AUTORESET_MODES = {AutoresetMode.NEXT_STEP: "next_step", AutoresetMode.SAME_STEP: "same_step",
                   AutoresetMode.DISABLED: "disabled"}  # the supported modes and vector_step's names
MAX_DEFAULT_RENDER_ENVS = 16  # render() shows all environments up to this many by default
MAX_SEED = 2 ** 31 - 1


def _pick(mask, a, b):
    """Per environment: ``a`` where ``mask`` (N,) else ``b`` (pytrees of (N, ...) arrays)."""
    return jax.tree_util.tree_map(lambda u, v: jnp.where(mask.reshape((-1,) + (1,) * (u.ndim - 1)), u, v), a, b)


@partial(jax.jit, static_argnames=("mode",))
def vector_step(states: F.EnvState, actions, done, key, params: F.EnvParams, mode: str = "next_step"):
    """Step N environments with the given autoreset ``mode`` (pure; one XLA call).

    Args:
        states: batched EnvState (N, ...); actions: (N, A) in [-1, 1]; done: (N,) bool, the
            environments whose episode ended at the previous step; key: PRNG key for resets.
        mode: ``"next_step"`` (Gymnasium's default: an environment that ended at the previous
            step resets now, ignores its action and returns reward 0), ``"same_step"`` (an
            environment that ends now is reset at once; its last observation is
            ``info["final_obs"]``) or ``"disabled"`` (no resets).
    Returns:
        (states, obs (N, 4K), rewards (N,), truncated (N,), info dict of (N,) arrays; with
        ``"same_step"`` the info also holds ``final_obs`` (N, 4K)).
    """
    n = actions.shape[0]
    stepped, obs, rew, trunc, info = jax.vmap(F.step, in_axes=(0, 0, None))(states, actions, params)
    if mode == "disabled":
        return stepped, obs, rew, trunc, info
    fresh = jax.vmap(F.reset, in_axes=(0, None))(jax.random.split(key, n), params)
    if mode == "same_step":
        info["final_obs"] = obs
        new = _pick(trunc, fresh, stepped)
        return new, jax.vmap(F.observe)(new), rew, trunc, info
    new = _pick(done, fresh, stepped)
    rew = jnp.where(done, 0.0, rew)
    trunc = jnp.where(done, False, trunc)
    return new, jax.vmap(F.observe)(new), rew, trunc, info


_render_batch = jax.jit(jax.vmap(F.render, in_axes=(0, None)))
_snap_batch = jax.jit(jax.vmap(F.snap_to_manifold, in_axes=(0, None)))


def check_actions(actions, shape: tuple[int, ...]) -> np.ndarray:
    """Batched actions as float32 (N, A); ValueError naming the first bad row unless they are
    real numbers, finite and inside [-1, 1] (never clipped)."""
    a = real_array(actions, "actions")
    if a.shape != shape:
        raise ValueError(f"actions have shape {a.shape}; expected {shape}")
    bad = ~np.all(np.isfinite(a) & (np.abs(a) <= 1.0), axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"actions of environment {rows[0]} ({a[rows[0]].tolist()}) are not finite values in "
                         f"[-1, 1]; {len(rows)} of {shape[0]} rows are bad: {rows[:8].tolist()}")
    return a


def _autoreset_mode(value) -> AutoresetMode:
    """An AutoresetMode from the enum, its value ("NextStep") or its snake-case name ("next_step")."""
    for mode, name in AUTORESET_MODES.items():
        if value in (mode, mode.value, name):
            return mode
    raise ValueError(f"unknown autoreset_mode {value!r}; allowed: {', '.join(map(repr, AUTORESET_MODES.values()))} "
                     "or a gymnasium.vector.AutoresetMode")


def _seed_list(seed, n: int) -> list[int | None]:
    """Per-environment seeds: an int s gives s, s + 1, …, s + n − 1 (Gymnasium's convention);
    a list gives one seed (or None) per environment."""
    if seed is None:
        return [None] * n
    if isinstance(seed, (list, tuple, np.ndarray)):
        seeds = list(seed)
        if len(seeds) != n:
            raise ValueError(f"seed list has {len(seeds)} entries; expected one per environment ({n})")
    else:
        seeds = [check_count("seed", seed, 0) + i for i in range(n)]
    for i, s in enumerate(seeds):
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s):
            raise ValueError(f"seed of environment {i} must be a non-negative integer or None, got {s!r}")
    return [None if s is None else int(s) for s in seeds]


def env_key(seed: int) -> jax.Array:
    """The reset key :class:`~keycld_gym.envs.KeyCLDEnv` draws after ``reset(seed=seed)``, so a
    vector env seeded with [s_0, …] starts where single envs seeded with s_i start."""
    rng, _ = seeding.np_random(seed)
    return jax.random.PRNGKey(int(rng.integers(0, MAX_SEED)))


class KeyCLDVectorEnv(gym.vector.VectorEnv):
    """N copies of a learned KeyCLD environment (keypoint observations) in one jitted step.

    Arguments: ``num_envs``; ``checkpoint`` (run or export directory) or ``system`` (a shipped
    model); ``integrator``, ``substeps``, ``bank_size``, ``model_version``, ``weights_sha256`` as for
    the single env (``model_info`` too);
    ``render_mode`` None or ``"rgb_array"``; ``render_envs``: how many environments ``render()``
    shows (default all when N ≤ 16, else the first 16; Gymnasium's vector ``RecordVideo`` needs
    all, i.e. ``render_envs=num_envs``); ``autoreset_mode``: ``"next_step"`` (default),
    ``"same_step"`` or ``"disabled"``; ``max_episode_steps`` (default 1000): truncation.

    ``reset(seed=s | [s_0, …, s_{N-1}], options=...)``: an int seed gives environment i the
    seed s + i, a list one seed each; environment i then starts where
    ``KeyCLDEnv.reset(seed=s_i)`` starts. Options (at most one of ``state``/``frames``):
    ``"state"`` (N, 4K) keypoint states (projected onto the manifold where off it),
    ``"frames"`` (N, 3, 64, 64, 3) uint8 camera frames (encoded), ``"reset_mask"`` (N,) bool:
    reset only these environments (the others keep their state).

    Step infos: ``energy``, ``constraint_residual``, ``saturated`` (N,) arrays; in same-step
    mode also ``final_obs`` (N, 4K) and ``final_info`` (the step's infos), valid where
    ``_final_obs``/``_final_info`` (N,) are True.
    """

    def __init__(self, num_envs: int = 1, checkpoint=None, obs_type: str = "keypoints", integrator: str = "rk4",
                 substeps: int | None = None, bank_size: int | None = None, render_mode: str | None = None,
                 render_envs: int | None = None, autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 max_episode_steps: int = 1000, system: str | None = None, model_version: int | None = None,
                 weights_sha256: str | None = None, **kwargs):
        from keycld_gym.loading import load_env_params, model_identity

        kwargs.pop("env_id", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if checkpoint is None and system is None:
            raise ValueError("KeyCLD-v0 needs checkpoint=DIR: a run directory of `keycld train` or a model "
                             "exported by `keycld export`")
        if obs_type != "keypoints":
            raise ValueError(f"the vector env supports obs_type 'keypoints' only, got {obs_type!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unknown render_mode {render_mode!r}; allowed: None, 'rgb_array'")
        self.num_envs = check_count("num_envs", num_envs, 1)
        self.render_envs = (min(self.num_envs, MAX_DEFAULT_RENDER_ENVS) if render_envs is None
                            else check_count("render_envs", render_envs, 1))
        if self.render_envs > self.num_envs:
            raise ValueError(f"render_envs must be <= num_envs ({self.num_envs}), got {self.render_envs}")
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        max_steps = check_count("max_episode_steps", max_episode_steps, 1)
        self.render_mode = render_mode
        params, _ = load_env_params(system, checkpoint, integrator, substeps, bank_size)
        self.model_info = model_identity(system, checkpoint, model_version, weights_sha256)
        self.params = params.replace(max_steps=max_steps)
        spec = self.params.model.system
        self.system = spec.name
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": ["rgb_array"],
                         "render_fps": int(round(1 / spec.dt))}
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)
        self.single_observation_space = keypoint_space(self.params)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._key = jax.random.PRNGKey(0)
        self._states: F.EnvState | None = None
        self._done = jnp.zeros(self.num_envs, bool)

    def _next_key(self):
        self._key, sub = jax.random.split(self._key)
        return sub

    def _start_states(self, seeds: list[int | None], options: dict[str, Any]) -> F.EnvState:
        n = self.num_envs
        if "state" in options:
            rows = real_array(options["state"], "options['state']")
            if rows.shape != (n, 2 * self.params.dim):
                raise ValueError(f"options['state'] must have shape ({n}, {2 * self.params.dim}) (one [x, ẋ] per "
                                 f"environment), got {rows.shape}")
            vecs = np.stack([check_state(r, self.params, f"options['state'][{i}]") for i, r in enumerate(rows)])
            return _snap_batch(F.state_from_vector(jnp.asarray(vecs)), self.params)
        if "frames" in options:
            from keycld_gym.loading import encode_central
            frames = np.asarray(options["frames"])
            if frames.ndim != 5 or frames.shape[0] != n:
                raise ValueError(f"options['frames'] must have shape ({n}, 3, 64, 64, 3) (three frames per "
                                 f"environment), got {frames.shape}")
            vecs = np.stack([encode_central(self.params.model, self.params.weights,
                                            check_frames(f, f"options['frames'][{i}]"), self.params.constraint_offset)
                             for i, f in enumerate(frames)])
            return F.state_from_vector(jnp.asarray(vecs, jnp.float32))
        keys = jnp.stack([self._next_key() if s is None else env_key(s) for s in seeds])
        return jax.vmap(F.reset, in_axes=(0, None))(keys, self.params)

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        seeds = _seed_list(seed, self.num_envs)
        options = dict(options or {})
        unknown = set(options) - {"state", "frames", "reset_mask"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: 'state' or 'frames', 'reset_mask'")
        if "state" in options and "frames" in options:
            raise ValueError("reset options 'frames' and 'state' exclude each other; give one")
        mask = options.pop("reset_mask", None)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != bool or mask.shape != (self.num_envs,):
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                                 f"got dtype {mask.dtype}, shape {mask.shape}")
            if self._states is None and not mask.all():
                raise RuntimeError("the first reset() must reset every environment (no reset_mask, or all True)")
        if seed is not None:
            super().reset(seed=seeds[0])
            self._key = jax.random.PRNGKey(int(np.random.SeedSequence(
                [s if s is not None else MAX_SEED for s in seeds]).generate_state(1)[0]))
        states = self._start_states(seeds, options)
        if mask is None or self._states is None:
            self._states, self._done = states, jnp.zeros(self.num_envs, bool)
        else:
            m = jnp.asarray(mask)
            self._states, self._done = _pick(m, states, self._states), jnp.where(m, False, self._done)
        return np.asarray(jax.vmap(F.observe)(self._states)), {}

    def step(self, actions):
        if self._states is None:
            raise RuntimeError("call reset() before step()")
        a = check_actions(actions, self.action_space.shape)
        mode = AUTORESET_MODES[self.autoreset_mode]
        self._states, obs, rew, trunc, info = vector_step(self._states, jnp.asarray(a), self._done,
                                                          self._next_key(), self.params, mode=mode)
        trunc = np.asarray(trunc)
        self._done = jnp.asarray(trunc) if self.autoreset_mode == AutoresetMode.NEXT_STEP else self._done
        infos = {k: np.asarray(v) for k, v in info.items()}
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            infos["_final_obs"] = trunc.copy()
            infos["final_info"] = {k: v for k, v in infos.items() if not k.startswith(("final", "_final"))}
            infos["_final_info"] = trunc.copy()
        return np.asarray(obs), np.asarray(rew), np.zeros(self.num_envs, bool), trunc, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """(64, 64, 3) uint8 frames of the first ``render_envs`` environments (learned renderer)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; use render_mode='rgb_array'")
            return None
        if self._states is None:
            raise RuntimeError("call reset() before render()")
        first = jax.tree_util.tree_map(lambda v: v[:self.render_envs], self._states)
        return tuple(np.asarray(_render_batch(first, self.params)))


def sb3_vec_env(system: str | None, num_envs: int, checkpoint=None, seed: int = 0, **kwargs):
    """A stable-baselines3 ``VecEnv`` over :class:`KeyCLDVectorEnv` in same-step autoreset mode
    (requires the ``rl`` extra). ``kwargs`` go to the vector env (e.g. ``render_mode="rgb_array"``
    for ``VecVideoRecorder``)."""
    from stable_baselines3.common.vec_env import VecEnv

    class SB3VecEnv(VecEnv):
        def __init__(self):
            self.inner = KeyCLDVectorEnv(num_envs=num_envs, checkpoint=checkpoint, system=system,
                                         autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
            super().__init__(num_envs, self.inner.single_observation_space, self.inner.single_action_space)
            self.metadata = {**self.metadata, "render_fps": self.inner.metadata["render_fps"]}
            self._actions = None
            self._seed = seed

        def reset(self):
            seeds = self._seeds if any(s is not None for s in self._seeds) else self._seed
            if any(self._options):
                raise NotImplementedError("per-environment reset options are not supported through SB3; "
                                          "give batched options to vec.inner.reset(options=...)")
            obs, _ = self.inner.reset(seed=seeds)
            self._seed += self.num_envs
            self._reset_seeds()
            return obs

        def step_async(self, actions):
            self._actions = actions

        def step_wait(self):
            obs, rew, _, trunc, info = self.inner.step(self._actions)
            final = info.pop("final_obs")
            keys = [k for k in info if not k.startswith(("final", "_final"))]
            infos = [{k: info[k][i].item() for k in keys} for i in range(self.num_envs)]
            for i in np.flatnonzero(trunc):
                infos[i]["terminal_observation"] = final[i]
                infos[i]["TimeLimit.truncated"] = True
            return obs, rew, trunc.copy(), infos

        def get_images(self) -> Sequence[np.ndarray]:
            frames = self.inner.render()
            return list(frames) if frames is not None else [None] * self.num_envs

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

    return SB3VecEnv()
