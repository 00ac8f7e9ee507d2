"""PPO trained inside the learned model, the whole training loop one jitted ``lax.scan``.

    python agents/ppo_jax.py --system pendulum --total_steps 20000000 --out benchmarks/results/ppo_jax/pendulum
    python agents/evaluate.py --agent ppo-jax --policy benchmarks/results/ppo_jax/pendulum --system pendulum \
        --episodes 50 --seed 1000 --out benchmarks/results/ppo_jax/pendulum

``make_train(config, env_params)`` builds, in the style of PureJaxRL, a pure ``init(rng)`` and a
jittable ``run(runner, num_updates)``; one update is: a rollout of ``num_steps`` control steps in
``num_envs`` copies of the learned environment (``keycld_gym.vector.vector_step``, same-step
autoreset, so a truncated episode bootstraps from the value of its last observation), GAE, and
``update_epochs`` passes of clipped-surrogate minibatch updates (optax adam, global-norm gradient
clipping). ``train(rng)`` runs every update in one ``lax.scan``; the CLI runs the same scan in
chunks and prints progress between them.

Policy: a diagonal Gaussian over the actions with a state-independent log std and a separate
value network (flax.linen MLPs, tanh). A sampled action is clipped into [-1, 1] before it reaches
the environment (the log-probability is that of the unclipped sample); the deterministic action
is the mean clipped into [-1, 1]. Observations are [x, ẋ] (4K floats, image units and image units
per second); with ``velocity="backward"`` (default) the policy sees ẋ as the real env's encoder
pipeline computes it, the projected second-order backward difference of the last three positions
(``backward_obs``), instead of the learned state's exact ẋ (``"true"``). They are normalised by a
running mean and variance over every observation of every rollout, kept inside the scan and saved with the policy, then clipped to ±``obs_clip`` standard deviations.

Training rewards (``reward``): ``"task"`` is the System's reward of the learned state (dm_control's:
cartpole and acrobot smooth, pendulum sparse); ``"shaped"`` (the pendulum and cartpole default)
is, for the pendulum, ``(1 + cos θ)/2 · (1 + g(ω; 5))/2`` from the keypoint's angle θ from upright
and angular velocity ω (rad/s), with ``g(·; m)`` dm_control's gaussian tolerance of margin m (1 at
0, 0.1 at ±m): 1 only when upright and still; for the cartpole, the task reward times
``(1 + g(c; 0.5))/2`` of the cart position c (m) times ``(4 + q(a_pole))/5`` (a pole torque
penalty like the task's on the cart force), plus 0.2 while |c| < 0.25 m and the pole cosine is
above 0.999: the task reward alone barely asks for a centred cart (0.99 of its best at c = 0.45 m)
and lets the pole torque hold the pole a few degrees off upright, which the success criterion
(|c| < 0.25 m, cosine > 0.995 on the real simulation) does not allow. Success is judged on the real simulation by the task's
sparse reward whatever the training reward (``agents.base``).

Actuator randomisation (``gain_low`` < 1): each training episode draws a gain g ~ U(gain_low, 1)
and the environment receives g · action (inside [-1, 1] since g ≤ 1), so the policy cannot rely
on the learned model's actuator strength being exact; the saved policy acts with g = 1. Damping
randomisation (``damping`` = c_max > 0): each training episode draws c ~ U(−c_max, c_max) (1/s) and
after every step the velocities are multiplied by exp(−c·dt) (energy lost or gained), so the policy
cannot rely on the learned model's friction being exact either.

``--underactuated`` (cartpole): the policy controls the cart force only; the pole torque is 0 in
training and evaluation.

Writes ``OUT/policy.msgpack`` (flax serialization of the network parameters and the observation
statistics), ``OUT/policy.json`` (the config and the training budget), ``OUT/curve.json`` and
``OUT/curve.png`` (training reward in the learned env against training wall clock and env steps). ``agents/evaluate.py --agent ppo-jax
--policy OUT`` evaluates the saved policy on ``KeyCLD-*-Real-v0`` from pixels (the encoder's
keypoints of the policy's checkpoint), as for the other agents; the CLI prints that command.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file (python agents/ppo_jax.py)
    import runpy, sys  # noqa: E401  # rerun as the package module, so relative imports work
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    runpy.run_module("agents.ppo_jax", run_name="__main__", alter_sys=True)
    raise SystemExit(0)

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from keycld import systems as R
from keycld.fileio import write_bytes, write_json
from keycld.tasks import ENVIRONMENTS, TASK_SPECS
from keycld_gym import functional as F
from keycld_gym.vector import vector_step

from .base import CART_BOUND

REWARDS = ("task", "shaped")
VELOCITIES = ("backward", "true")
POLICY_FILE = "policy.msgpack"
CONFIG_FILE = "policy.json"
EVAL_SEED = 1000  # first seed of the real-env evaluation the CLI suggests (seeds the training never used)
OMEGA_MARGIN = 5.0  # rad/s: the shaped pendulum reward's velocity tolerance margin
CART_MARGIN = 0.5  # m: the shaped cartpole reward's cart position tolerance margin
SPARSE_BONUS = 0.2  # the shaped cartpole reward's bonus while the cart is centred and the pole upright
BONUS_COSINE = 0.999  # pole cosine the bonus asks for (2.6°): the real upright and the keypoints' differ by degrees
SHAPED = ("pendulum", "cartpole")  # the systems with a shaped reward


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Hyper-parameters of :func:`make_train`.

    ``total_steps``: environment transitions summed over the ``num_envs`` copies (rounded down
    to whole updates of ``num_envs · num_steps``). ``reward_scale`` multiplies the training
    reward before GAE; ``gamma`` is per control step. ``hidden``: sizes of both MLPs.
    """

    system: str
    total_steps: int = 10_000_000
    num_envs: int = 256
    num_steps: int = 64
    update_epochs: int = 4
    num_minibatches: int = 8
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    lr: float = 3e-4
    anneal_lr: bool = True
    hidden: tuple[int, ...] = (64, 64)
    init_log_std: float = -0.5
    reward: str = "task"
    reward_scale: float = 0.1
    obs_clip: float = 10.0
    underactuated: bool = False
    substeps: int = 1
    velocity: str = "backward"
    gain_low: float = 1.0
    damping: float = 0.0

    def __post_init__(self):
        if self.system not in ENVIRONMENTS:
            raise ValueError(f"unknown system {self.system!r}; allowed: {', '.join(ENVIRONMENTS)}")
        for name in ("total_steps", "num_envs", "num_steps", "update_epochs", "num_minibatches", "substeps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("gamma", "gae_lambda"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        for name in ("clip_eps", "max_grad_norm", "lr", "reward_scale", "obs_clip"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("ent_coef", "vf_coef"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not 0.0 < self.gain_low <= 1.0:
            raise ValueError(f"gain_low must be in (0, 1], got {self.gain_low!r}")
        if not (math.isfinite(self.damping) and self.damping >= 0):
            raise ValueError(f"damping must be a finite number >= 0, got {self.damping!r}")
        if not math.isfinite(self.init_log_std):
            raise ValueError(f"init_log_std must be finite, got {self.init_log_std!r}")
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive integers, got {self.hidden!r}")
        if self.velocity not in VELOCITIES:
            raise ValueError(f"unknown velocity {self.velocity!r}; allowed: {', '.join(VELOCITIES)}")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; allowed: {', '.join(REWARDS)}")
        if self.reward == "shaped" and self.system not in SHAPED:
            raise ValueError(f"reward 'shaped' is defined for {' and '.join(SHAPED)} only, not {self.system!r}; "
                             "use 'task'")
        if self.underactuated and self.system != "cartpole":
            raise ValueError(f"underactuated is defined for the cartpole only, not {self.system!r}")
        batch = self.num_envs * self.num_steps
        if batch % self.num_minibatches:
            raise ValueError(f"num_envs · num_steps ({batch}) must be divisible by num_minibatches "
                             f"({self.num_minibatches})")
        if self.total_steps < batch:
            raise ValueError(f"total_steps ({self.total_steps}) must be at least one update of num_envs · num_steps "
                             f"= {batch} transitions")

    @property
    def num_updates(self) -> int:
        return self.total_steps // (self.num_envs * self.num_steps)

    @property
    def env_action_dim(self) -> int:
        return TASK_SPECS[self.system].num_actions

    @property
    def action_dim(self) -> int:
        """Actions the policy outputs (the cart force only when underactuated)."""
        return 1 if self.underactuated else self.env_action_dim

    @property
    def obs_dim(self) -> int:
        return 4 * TASK_SPECS[self.system].num_keypoints

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PPOConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown PPO config keys {sorted(unknown)}; allowed: {sorted(names)}")
        return cls(**{**d, "hidden": tuple(d.get("hidden", cls.hidden))})


class ActorCritic(nn.Module):
    """obs (..., D) normalised -> (action mean (..., A), log std (A,), value (...))."""

    action_dim: int
    hidden: Sequence[int] = (64, 64)
    init_log_std: float = -0.5

    @nn.compact
    def __call__(self, obs):
        def mlp(h, out, scale, name):
            for i, width in enumerate(self.hidden):
                h = nn.tanh(nn.Dense(width, kernel_init=nn.initializers.orthogonal(math.sqrt(2)),
                                     name=f"{name}_{i}")(h))
            return nn.Dense(out, kernel_init=nn.initializers.orthogonal(scale), name=f"{name}_out")(h)

        mean = mlp(obs, self.action_dim, 0.01, "actor")
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,))
        value = mlp(obs, 1, 1.0, "critic")[..., 0]
        return mean, log_std, value


class ObsStats(NamedTuple):
    """Running mean and (population) variance of observations, and how many they summarise."""

    mean: jnp.ndarray
    var: jnp.ndarray
    count: jnp.ndarray

    @staticmethod
    def initial(dim: int) -> "ObsStats":
        return ObsStats(jnp.zeros(dim, jnp.float32), jnp.ones(dim, jnp.float32), jnp.asarray(1e-4, jnp.float32))

    def update(self, batch: jnp.ndarray) -> "ObsStats":
        """Merge a batch (n, D) (parallel-variance formula)."""
        b_mean, b_var, n = batch.mean(0), batch.var(0), batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + n
        mean = self.mean + delta * n / total
        m2 = self.var * self.count + b_var * n + delta ** 2 * self.count * n / total
        return ObsStats(mean, m2 / total, total)

    def normalize(self, obs: jnp.ndarray, clip: float) -> jnp.ndarray:
        return jnp.clip((obs - self.mean) / jnp.sqrt(self.var + 1e-8), -clip, clip)


class Runner(NamedTuple):
    """Everything the training scan carries."""

    params: Any
    opt_state: Any
    env_state: F.EnvState
    obs: jnp.ndarray  # (N, D) observations the policy sees (before normalisation)
    hist: jnp.ndarray  # (N, 2, 2K) keypoint positions of the two previous steps, oldest first
    stats: ObsStats
    ep_return: jnp.ndarray  # (N,) task return of the running episodes
    ep_len: jnp.ndarray  # (N,) steps of the running episodes
    gain: jnp.ndarray  # (N,) actuator gain of the running episodes
    damp: jnp.ndarray  # (N,) extra velocity damping rate (1/s) of the running episodes
    rng: jax.Array


class Transition(NamedTuple):
    obs: jnp.ndarray
    raw_action: jnp.ndarray
    log_prob: jnp.ndarray
    value: jnp.ndarray
    reward: jnp.ndarray  # scaled training reward, plus γ·V(last obs) where the episode was truncated
    done: jnp.ndarray


def shaped_pendulum_reward(obs: jnp.ndarray) -> jnp.ndarray:
    """(1 + cos θ)/2 · (1 + g(ω))/2 of one pendulum observation [x, ẋ] (4,)."""
    cos, omega = R.pendulum_quantities(obs[0:2], obs[2:4])
    return (1.0 + cos) / 2.0 * (1.0 + R.tolerance(omega, margin=OMEGA_MARGIN)) / 2.0


def shaped_cartpole_reward(obs: jnp.ndarray, action: jnp.ndarray, task_reward: jnp.ndarray) -> jnp.ndarray:
    """Task reward · (1 + g(cart; 0.5 m))/2 · (4 + q(a_pole))/5 + 0.2 · [|cart| < 0.25 m and pole
    cosine > 0.999] of one cartpole observation [x, ẋ] (8,) and action (A,), with q dm_control's
    quadratic tolerance of margin 1 (1 at 0, 0 at ±1)."""
    cart, cos, _ = R.cartpole_quantities(obs[0:4], obs[4:8])
    centered = (1.0 + R.tolerance(cart, margin=CART_MARGIN)) / 2.0
    pole_torque = action[1] if action.shape[0] > 1 else jnp.zeros(())
    small = (4.0 + R.tolerance(pole_torque, margin=1.0, value_at_margin=0.0, sigmoid="quadratic")) / 5.0
    upright = (jnp.abs(cart) < CART_BOUND) & (cos > BONUS_COSINE)
    return task_reward * centered * small + SPARSE_BONUS * upright


def gaussian_log_prob(x, mean, log_std):
    return jnp.sum(-0.5 * ((x - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def pad_actions(action: jnp.ndarray, env_action_dim: int) -> jnp.ndarray:
    """Policy actions (..., A') -> env actions (..., A): the missing trailing actions are 0."""
    missing = env_action_dim - action.shape[-1]
    return jnp.concatenate([action, jnp.zeros(action.shape[:-1] + (missing,), action.dtype)], -1) if missing else action


def start_history(state: F.EnvState, dt: float) -> jnp.ndarray:
    """(2, 2K) positions one and two steps back along the state's velocity, oldest first: the
    backward difference of them and x is ẋ itself."""
    return jnp.stack([state.x - 2 * dt * state.xd, state.x - dt * state.xd])


def backward_obs(hist: jnp.ndarray, x: jnp.ndarray, params: F.EnvParams) -> jnp.ndarray:
    """[x, ẋ] with ẋ the second-order backward difference (3x − 4x₋₁ + x₋₂)/2dt of the positions
    ``hist`` (2, 2K) and ``x``, projected onto the manifold's tangent space: the observation the
    real env's encoder pipeline (``keycld_gym.loading.backward_state``) computes from frames."""
    xd = (3 * x - 4 * hist[1] + hist[0]) / (2 * params.model.dt)
    return jnp.concatenate(F.project(x, xd, params), -1).astype(jnp.float32)


RewardFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


def make_train(config: PPOConfig, env_params: F.EnvParams, reward_fn: RewardFn | None = None):
    """(init, run, train) for ``config`` in the learned environment ``env_params``.

    ``init(rng) -> Runner``; ``run(runner, num_updates) -> (runner, metrics)`` performs
    ``num_updates`` updates in one ``lax.scan`` (jit it with ``num_updates`` static); metrics are
    (num_updates,) arrays: ``reward`` (mean training reward per step, unscaled), ``task_reward``,
    ``returns_sum`` and ``returns_count`` (task returns of the episodes of full length that ended).
    ``train(rng) -> (runner, metrics)`` is init and every update in one scan.
    ``reward_fn(next_obs (D,), action (A,), task_reward ()) -> ()`` overrides the training reward
    (tests); by default it is ``config.reward``.
    """
    net = ActorCritic(config.action_dim, tuple(config.hidden), config.init_log_std)
    n, steps = config.num_envs, config.num_steps
    minibatch = n * steps // config.num_minibatches
    max_steps = env_params.max_steps
    dt = env_params.model.dt

    def observe(hist, state: F.EnvState):
        """Policy observations of a batch of states (N, D)."""
        if config.velocity == "true":
            return jax.vmap(F.observe)(state)
        return jax.vmap(backward_obs, in_axes=(0, 0, None))(hist, state.x, env_params)
    if reward_fn is None:
        if config.reward == "shaped" and config.system == "pendulum":
            reward_fn = lambda o, a, r: shaped_pendulum_reward(o)  # noqa: E731
        elif config.reward == "shaped":
            reward_fn = shaped_cartpole_reward
        else:
            reward_fn = lambda o, a, r: r  # noqa: E731
    if config.anneal_lr:
        total = config.num_updates * config.update_epochs * config.num_minibatches
        lr = optax.linear_schedule(config.lr, 0.0, total)
    else:
        lr = config.lr
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))

    def draw_gain(key):
        return jax.random.uniform(key, (n,), minval=config.gain_low, maxval=1.0)

    def draw_damping(key):
        return jax.random.uniform(key, (n,), minval=-config.damping, maxval=config.damping)

    def init(rng: jax.Array) -> Runner:
        k_net, k_env, k_t, k_gain, k_damp, rng = jax.random.split(rng, 6)
        params = net.init(k_net, jnp.zeros((config.obs_dim,), jnp.float32))
        env_state = jax.vmap(F.reset, in_axes=(0, None))(jax.random.split(k_env, n), env_params)
        # start the copies at spread-out times so that their episodes do not all end together
        env_state = env_state.replace(t=jax.random.randint(k_t, (n,), 0, max_steps, jnp.int32))
        hist = jax.vmap(start_history, in_axes=(0, None))(env_state, dt)
        return Runner(params, tx.init(params), env_state, observe(hist, env_state), hist,
                      ObsStats.initial(config.obs_dim),
                      jnp.zeros(n), jnp.where(env_state.t == 0, 0, -max_steps).astype(jnp.int32), draw_gain(k_gain),
                      draw_damping(k_damp), rng)

    def env_step(carry, _):
        r, stats = carry
        rng, k_act, k_reset, k_gain, k_damp = jax.random.split(r.rng, 5)
        obs_before = r.obs
        nobs = stats.normalize(r.obs, config.obs_clip)
        mean, log_std, value = net.apply(r.params, nobs)
        raw = mean + jnp.exp(log_std) * jax.random.normal(k_act, mean.shape)
        log_prob = gaussian_log_prob(raw, mean, log_std)
        action = jnp.clip(raw, -1.0, 1.0)
        env_state, _, task_r, trunc, info = vector_step(
            r.env_state, pad_actions(action * r.gain[:, None], config.env_action_dim), jnp.zeros(n, bool), k_reset,
            env_params,
            mode="same_step")
        if config.damping > 0:  # the stepped copies' velocities decay (or grow) by exp(−c·dt)
            env_state = env_state.replace(xd=jnp.where(trunc[:, None], env_state.xd,
                                                       env_state.xd * jnp.exp(-r.damp * dt)[:, None]))
            info["final_obs"] = jnp.where(trunc[:, None], info["final_obs"], jax.vmap(F.observe)(env_state))
        final = info["final_obs"]  # [x, ẋ] after the step (before any reset)
        train_r = jax.vmap(reward_fn)(final, action, task_r)
        hist = jnp.stack([r.hist[:, 1], r.env_state.x], axis=1)
        final_state = F.state_from_vector(final)
        _, _, final_value = net.apply(r.params, stats.normalize(observe(hist, final_state), config.obs_clip))
        hist = jnp.where(trunc[:, None, None], jax.vmap(start_history, in_axes=(0, None))(env_state, dt), hist)
        reward = train_r * config.reward_scale + config.gamma * final_value * trunc
        ep_return, ep_len = r.ep_return + task_r, r.ep_len + 1
        full = trunc & (ep_len == max_steps)
        metric = (train_r, task_r, jnp.where(full, ep_return, 0.0), full)
        r = r._replace(env_state=env_state, obs=observe(hist, env_state), hist=hist, rng=rng, ep_return=jnp.where(trunc, 0.0, ep_return),
                       ep_len=jnp.where(trunc, 0, ep_len), gain=jnp.where(trunc, draw_gain(k_gain), r.gain),
                       damp=jnp.where(trunc, draw_damping(k_damp), r.damp))
        return (r, stats), (Transition(nobs, raw, log_prob, value, reward, trunc), obs_before, metric)

    def gae(traj: Transition, last_value):
        def body(carry, t: Transition):
            adv, next_value = carry
            nonterminal = 1.0 - t.done
            delta = t.reward + config.gamma * next_value * nonterminal - t.value
            adv = delta + config.gamma * config.gae_lambda * nonterminal * adv
            return (adv, t.value), adv

        _, advantages = jax.lax.scan(body, (jnp.zeros_like(last_value), last_value), traj, reverse=True)
        return advantages, advantages + traj.value

    def loss_fn(params, batch: Transition, advantages, targets):
        mean, log_std, value = net.apply(params, batch.obs)
        log_prob = gaussian_log_prob(batch.raw_action, mean, log_std)
        ratio = jnp.exp(log_prob - batch.log_prob)
        adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * adv).mean()
        v_clipped = batch.value + jnp.clip(value - batch.value, -config.clip_eps, config.clip_eps)
        value_loss = 0.5 * jnp.maximum((value - targets) ** 2, (v_clipped - targets) ** 2).mean()
        entropy = jnp.sum(log_std + 0.5 * math.log(2 * math.pi * math.e))
        return policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy

    def update(r: Runner, _):
        stats = r.stats
        (r, _), (traj, raw_obs, metric) = jax.lax.scan(env_step, (r, stats), None, steps)
        _, _, last_value = net.apply(r.params, stats.normalize(r.obs, config.obs_clip))
        advantages, targets = gae(traj, last_value)
        stats = stats.update(raw_obs.reshape(-1, config.obs_dim))

        def epoch(carry, _):
            params, opt_state, rng = carry
            rng, k = jax.random.split(rng)
            perm = jax.random.permutation(k, n * steps)
            flat = jax.tree_util.tree_map(lambda v: v.reshape((n * steps,) + v.shape[2:]),
                                          (traj, advantages, targets))
            mbs = jax.tree_util.tree_map(lambda v: v[perm].reshape((config.num_minibatches, minibatch) + v.shape[1:]),
                                         flat)

            def minibatch_step(c, mb):
                p, o = c
                grads = jax.grad(loss_fn)(p, *mb)
                upd, o = tx.update(grads, o, p)
                return (optax.apply_updates(p, upd), o), None

            (params, opt_state), _ = jax.lax.scan(minibatch_step, (params, opt_state), mbs)
            return (params, opt_state, rng), None

        (params, opt_state, rng), _ = jax.lax.scan(epoch, (r.params, r.opt_state, r.rng), None,
                                                   config.update_epochs)
        train_r, task_r, ret, full = metric
        metrics = {"reward": train_r.mean(), "task_reward": task_r.mean(), "returns_sum": ret.sum(),
                   "returns_count": full.sum()}
        return r._replace(params=params, opt_state=opt_state, stats=stats, rng=rng), metrics

    def run(runner: Runner, num_updates: int):
        return jax.lax.scan(update, runner, None, num_updates)

    def train(rng: jax.Array):
        return run(init(rng), config.num_updates)

    return init, run, train


# ---- saved policy ----------------------------------------------------------------------------------
def policy_template(config: PPOConfig) -> dict[str, Any]:
    """The tree :func:`save_policy` writes, with fresh values (the structure to restore into)."""
    net = ActorCritic(config.action_dim, tuple(config.hidden), config.init_log_std)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((config.obs_dim,), jnp.float32))
    stats = ObsStats.initial(config.obs_dim)
    return {"params": params, "obs_mean": stats.mean, "obs_var": stats.var, "obs_count": stats.count}


def save_policy(out: Path, config: PPOConfig, runner: Runner, info: dict[str, Any]) -> None:
    """``OUT/policy.msgpack`` (network parameters and observation statistics) and ``OUT/policy.json``
    (``{"ppo": config, **info}``), each written atomically."""
    tree = {"params": runner.params, "obs_mean": runner.stats.mean, "obs_var": runner.stats.var,
            "obs_count": runner.stats.count}
    write_bytes(Path(out) / POLICY_FILE, serialization.to_bytes(jax.device_get(tree)))
    write_json(Path(out) / CONFIG_FILE, {"ppo": config.to_json(), **info})


def load_policy(path: str | os.PathLike) -> tuple[PPOConfig, dict[str, Any], dict[str, Any]]:
    """(config, policy tree, the rest of policy.json) of a folder written by :func:`save_policy`.

    ValueError when a file is missing, the config is invalid, or the parameters do not match the
    config's network shapes or are not finite."""
    path = Path(path)
    for name in (CONFIG_FILE, POLICY_FILE):
        if not (path / name).is_file():
            raise ValueError(f"{str(path)!r} is not a ppo-jax policy folder: {name} is missing "
                             f"(written by agents/ppo_jax.py)")
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
        config = PPOConfig.from_json(meta.pop("ppo"))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path / CONFIG_FILE}: not a ppo-jax config ({e})") from None
    template = policy_template(config)
    try:
        tree = serialization.from_bytes(template, (path / POLICY_FILE).read_bytes())
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path / POLICY_FILE}: does not match the network of {CONFIG_FILE} ({e})") from None
    for (kp, want), got in zip(jax.tree_util.tree_leaves_with_path(template), jax.tree_util.tree_leaves(tree)):
        name = jax.tree_util.keystr(kp)
        if np.shape(got) != np.shape(want):
            raise ValueError(f"{path / POLICY_FILE}: {name} has shape {np.shape(got)}; the config's network "
                             f"needs {np.shape(want)}")
        if not np.all(np.isfinite(got)):
            raise ValueError(f"{path / POLICY_FILE}: {name} holds non-finite values")
    return config, tree, meta


class PPOAgent:
    """``agents.base.Agent`` of a saved policy: the mean action clipped into [-1, 1] (zeros appended
    for the actions an underactuated policy does not control), from keypoint observations."""

    def __init__(self, path: str | os.PathLike):
        self.config, tree, self.meta = load_policy(path)
        net = ActorCritic(self.config.action_dim, tuple(self.config.hidden), self.config.init_log_std)
        stats = ObsStats(jnp.asarray(tree["obs_mean"]), jnp.asarray(tree["obs_var"]), jnp.asarray(tree["obs_count"]))
        params, clip, dim = tree["params"], self.config.obs_clip, self.config.env_action_dim
        self._act = jax.jit(lambda o: pad_actions(jnp.clip(net.apply(params, stats.normalize(o, clip))[0], -1, 1), dim))

    def reset(self, env, obs, info) -> None:
        pass

    def act(self, obs, info) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        if obs.shape != (self.config.obs_dim,):
            raise ValueError(f"observation has shape {obs.shape}; this {self.config.system} policy needs "
                             f"({self.config.obs_dim},) keypoints [x, ẋ] (a KeyCLD env with obs_type='keypoints')")
        return np.asarray(self._act(obs), np.float32)


def policy_agent(policy: str | os.PathLike | None, system: str, checkpoint=None,
                 underactuated: bool = False) -> PPOAgent:
    """The :class:`PPOAgent` of the folder ``policy`` for ``agents.evaluate``; ValueError unless it
    was trained for this system, checkpoint (None: the shipped model) and actuation."""
    if policy is None:
        raise ValueError("agent 'ppo-jax' needs policy=DIR (--policy): a folder written by agents/ppo_jax.py")
    agent = PPOAgent(policy)
    cfg, trained_on = agent.config, agent.meta.get("checkpoint")
    if cfg.system != system:
        raise ValueError(f"policy {str(policy)!r} was trained for the {cfg.system}, not the {system}")
    if cfg.underactuated != underactuated:
        raise ValueError(f"policy {str(policy)!r} was trained {'under' if cfg.underactuated else 'fully '}actuated; "
                         f"evaluate it with{'' if cfg.underactuated else 'out'} --underactuated")

    def same(a, b) -> bool:
        return (a is None and b is None) or (a is not None and b is not None
                                             and Path(a).resolve() == Path(b).resolve())

    if not same(trained_on, checkpoint):
        raise ValueError(f"policy {str(policy)!r} was trained in checkpoint {trained_on!r} (None: the shipped "
                         f"model); its observations come from that encoder, so evaluate it with that checkpoint, "
                         f"not {None if checkpoint is None else str(checkpoint)!r}")
    return agent


# ---- training driver and CLI -----------------------------------------------------------------------
def run_training(config: PPOConfig, seed: int = 0, checkpoint=None, chunks: int = 10,
                 progress: bool = True, reward_fn: RewardFn | None = None, env_params: F.EnvParams | None = None
                 ) -> tuple[Runner, list[dict[str, Any]]]:
    """Train in ``chunks`` jitted chunks of updates; (final runner, one curve row per chunk).

    Rows: ``wall_clock_s`` (since the start, compilation included), ``env_steps``,
    ``train_reward`` (mean training reward per step over the chunk), ``task_reward`` (the
    System's), ``task_return_mean`` (task return of the full-length episodes that ended in the
    chunk; None if none did), ``episodes``."""
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunks must be a positive integer, got {chunks!r}")
    if env_params is None:
        from keycld_gym.loading import load_env_params
        env_params, _ = load_env_params(config.system, checkpoint, substeps=config.substeps)
    init, run, _ = make_train(config, env_params, reward_fn)
    run = jax.jit(run, static_argnums=1)
    per_chunk = -(-config.num_updates // chunks)
    t0 = time.perf_counter()
    runner = jax.jit(init)(jax.random.PRNGKey(seed))
    rows, done = [], 0
    while done < config.num_updates:
        k = min(per_chunk, config.num_updates - done)
        runner, m = run(runner, k)
        m = jax.device_get(m)
        done += k
        count = int(m["returns_count"].sum())
        row = {"wall_clock_s": round(time.perf_counter() - t0, 2),
               "env_steps": done * config.num_envs * config.num_steps,
               "train_reward": float(m["reward"].mean()), "task_reward": float(m["task_reward"].mean()),
               "task_return_mean": float(m["returns_sum"].sum() / count) if count else None, "episodes": count}
        rows.append(row)
        if progress:
            ret = "–" if row["task_return_mean"] is None else f"{row['task_return_mean']:.1f}"
            print(f"[ppo-jax] {row['wall_clock_s']:7.1f} s  {row['env_steps']:>11,d} steps  "
                  f"reward/step {row['train_reward']:.3f} (task {row['task_reward']:.3f})  "
                  f"task return {ret} over {count} episodes", flush=True)
    return runner, rows


def plot_curve(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training return in the learned env against wall clock and env steps (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keycld.viz import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, key, label in zip(axes, ("wall_clock_s", "env_steps"), ("training wall clock (s)", "env steps")):
        ax.plot([r[key] for r in rows], [1000 * r["task_reward"] for r in rows], marker="o", label="task reward × 1000")
        ax.plot([r[key] for r in rows], [1000 * r["train_reward"] for r in rows], marker=".",
                label="training reward × 1000")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("per-step reward × 1000 (learned env)")
    axes[1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from keycld.cliutil import StrictParser, positive_int

    p = StrictParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", choices=ENVIRONMENTS, required=True)
    p.add_argument("--checkpoint", default=None, help="run or exported-model directory (default: the shipped model)")
    p.add_argument("--num_envs", type=positive_int, default=PPOConfig.num_envs)
    p.add_argument("--num_steps", type=positive_int, default=PPOConfig.num_steps, help="rollout steps per update")
    p.add_argument("--total_steps", type=positive_int, required=True, help="env steps summed over the copies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reward", choices=REWARDS, default=None,
                   help="training reward (default: shaped for the pendulum and the cartpole, task otherwise)")
    p.add_argument("--underactuated", action="store_true", help="cartpole: pole torque held at 0")
    p.add_argument("--gamma", type=float, default=None, help="discount per control step (default 0.99; "
                   "0.995 for the 100 Hz cartpole and acrobot)")
    p.add_argument("--lr", type=float, default=PPOConfig.lr)
    p.add_argument("--ent_coef", type=float, default=PPOConfig.ent_coef)
    p.add_argument("--update_epochs", type=positive_int, default=PPOConfig.update_epochs)
    p.add_argument("--num_minibatches", type=positive_int, default=PPOConfig.num_minibatches)
    p.add_argument("--hidden", default="64,64", help="hidden sizes of the actor and the critic")
    p.add_argument("--velocity", choices=VELOCITIES, default=PPOConfig.velocity,
                   help="the policy's ẋ: backward difference of positions (as the real env) or the state's")
    p.add_argument("--gain_low", type=float, default=None,
                   help="training actuator gain drawn from U(gain_low, 1) per episode (default 0.5 for the "
                        "pendulum, 1 otherwise)")
    p.add_argument("--damping", type=float, default=None,
                   help="training velocity damping drawn from U(-d, d) 1/s per episode (default 0.4 for the "
                        "pendulum, 0 otherwise)")
    p.add_argument("--substeps", type=positive_int, default=PPOConfig.substeps, help="RK4 sub-steps per control step")
    p.add_argument("--chunks", type=positive_int, default=20, help="compiled chunks (a progress line after each)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default=None, help="output folder (default runs/ppo_jax/SYSTEM)")
    args = p.parse_args(argv)
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    try:
        hidden = tuple(int(h) for h in args.hidden.split(","))
    except ValueError:
        p.error(f"--hidden must be comma-separated positive integers, got {args.hidden!r}")
    reward = args.reward or ("shaped" if args.system in SHAPED else "task")
    gamma = args.gamma if args.gamma is not None else (0.99 if TASK_SPECS[args.system].dt >= 0.02 else 0.995)
    try:
        config = PPOConfig(system=args.system, total_steps=args.total_steps, num_envs=args.num_envs,
                           num_steps=args.num_steps, update_epochs=args.update_epochs,
                           num_minibatches=args.num_minibatches, gamma=gamma, lr=args.lr, ent_coef=args.ent_coef,
                           hidden=hidden, reward=reward, underactuated=args.underactuated, substeps=args.substeps,
                           velocity=args.velocity,
                           gain_low=args.gain_low if args.gain_low is not None else
                           (0.5 if args.system == "pendulum" else 1.0),
                           damping=args.damping if args.damping is not None else
                           (0.4 if args.system == "pendulum" else 0.0))
    except ValueError as e:
        p.error(str(e))
    out = Path(args.out or f"runs/ppo_jax/{args.system}{'-underactuated' if args.underactuated else ''}")
    out.mkdir(parents=True, exist_ok=True)
    runner, rows = run_training(config, args.seed, args.checkpoint, args.chunks, progress=not args.quiet)
    info = {"checkpoint": args.checkpoint, "seed": args.seed, "chunks": args.chunks,
            "train_wall_clock_s": rows[-1]["wall_clock_s"], "env_steps": rows[-1]["env_steps"],
            "real_sim_samples": 0, "jax_backend": jax.default_backend()}
    save_policy(out, config, runner, info)
    write_json(out / "curve.json", rows)
    plot_curve(rows, out / "curve.png", f"ppo-jax in the learned {args.system} model"
               + (" (underactuated)" if args.underactuated else ""))
    print(f"wrote {out}/{POLICY_FILE}, {CONFIG_FILE}, curve.json, curve.png; evaluate it on the real simulation "
          f"from pixels with\n  python agents/evaluate.py --agent ppo-jax --policy {out} --system {args.system}"
          + (" --underactuated" if args.underactuated else "")
          + ("" if args.checkpoint is None else f" --checkpoint {args.checkpoint}")
          + f" --episodes 50 --seed {EVAL_SEED} --out {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
