"""Model-predictive control through the differentiable learned model (KeyCLD).

Two receding-horizon planners optimise an open-loop action sequence ``(H, A)`` through the
trained model's dynamics (``keycld_gym.functional.step`` inside ``jax.lax.scan``) at every
control step, apply its first action and plan again at the next step from the new observation.
The observation is the keypoint state ``[x, ẋ]`` (4K,): in the real env the encoder's keypoints
of the last 64×64 frames (``KeyCLD-*-Real-v0`` with ``obs_type="keypoints"``), in the learned
env the env's own state.

``kind="grad"`` — gradient-based shooting. The plan is ``a = tanh(z)`` with ``z`` (H, A)
unconstrained, so every action stays in the Box [-1, 1] whatever the step size; ``iterations``
Adam steps (optax) ascend the planning objective J(a) by ``jax.value_and_grad`` through the
rollout. The whole optimisation is one jitted call per control step (``jax.lax.fori_loop``
over the iterations) and returns the best iterate seen (J is evaluated at every iterate anyway),
so a step never makes the plan worse under the model. ``z`` is clipped to ±``z_max`` after each
step to keep tanh out of its flat tails (the gradient would vanish there).

``kind="cem"`` — the cross-entropy method as in PETS / mbrl-lib: a Gaussian over the (H, A)
sequence (mean warm-started, std reset to ``init_std``), ``population`` samples clipped to the
Box, the ``elites`` best by J refit mean and std (smoothed by ``alpha``), ``iterations`` rounds;
rollouts are vmapped and all rounds are one jitted call per control step. The first sample of
the first round is the warm-started mean itself; the best sequence seen is executed. Random
keys derive from ``seed``, the episode (``info["seed"]`` given to ``reset`` by
``agents.base.run_episode``, else a count of resets) and the step counter, so the same seeds give
the same plans — an episode replayed with its seed is planned identically.

**Warm start** (both): the previous plan shifted by one step, the last action repeated. The first
plan of an episode starts from small seeded noise (``init_noise``), which breaks the symmetry of
a pendulum hanging at rest (where the gradient of every upright term is zero).

**Planning objective** (both planners, ``plan_return``) for the rollout s_1 … s_H from s_0::

    J(a) = Σ_t [ r(s_t, a_t) + w_dense · d(s_t) ] + w_terminal · T(s_H)

* r: the learned env's own reward (dm_control's swing-up reward from the keypoints,
  ``functional.step``). The pendulum's is sparse (1 within 8° of upright, 0 elsewhere): it has a
  zero gradient almost everywhere and gives CEM no signal until a sample reaches the top.
* d ∈ [0, 1]: a dense surrogate of progress towards the goal — pendulum the pole's (1 + cos)/2;
  cartpole the same times a centring factor (1 + tol(cart, ±0.25 m, margin 1 m))/2 and a
  stillness factor (1 + tol(cart speed, margin 1 m/s))/2; acrobot the tip height
  (y_tip/2L + 1)/2.
* T ≤ 0: an energy terminal term −((E(s_H) − E_target) / (E* − E_down))², E the model's learned
  energy in the actuated base's frame (``energy_shaping.frame_velocity``: for the cartpole the
  cart's own motion does not count, so racing the cart is no progress), E* = V(x*) of the
  upright pose at rest and E_down of the hanging pose (both poses rendered by the real simulator
  and encoded, once, at construction), E_target = E* − ``energy_margin``·(E* − E_down). It tells
  a horizon too short to see the top that pumping energy is progress; 0 for models without an
  energy (the node2 ablation).

Horizons are in control steps (pendulum dt = 0.02 s, cartpole and acrobot 0.01 s). The planner
integrates the model with the integrator it was trained with (``integrator=None``: the model's
``solver``, one substep per control step), which is cheaper than the learned env's RK4 (with the
sub-steps recorded in the model's ``model.json``); pass ``integrator="rk4"`` and that ``substeps``
to plan on exactly that env.

``underactuated=True`` (cartpole only) holds the second actuator (the pole torque) at 0 in every
planned action, and the defaults become ``UNDERACTUATED_DEFAULTS``: half-force plans
(``action_limit``) over a 1.2 s horizon whose objective is mostly the energy terminal term.

**Dual mode** (``catch=True``, the default of the pendulum and the cartpole): the plan swings
the pole up and the local LQR of ``agents.energy_shaping`` (same model, same switching rule and
hysteresis, the cart's offset clipped so the pole is balanced first and walked back to the
centre) holds it.
A horizon of 0.8 s balances the pole but does not see why a slowly drifting cart matters, and
the underactuated learned cartpole needs gains a sampled or few-iteration plan does not find
reliably; the LQR is the infinite-horizon answer near the goal (Michalska & Mayne's dual-mode
receding horizon control). Both modes read the state through the catch controller's
``state`` — for the underactuated cartpole that is the model-based observer
(``agents.observer``) of ``energy_shaping.UNDERACTUATED_GAINS``, which also sets the catch.
Planning time is measured only on the steps that plan (``plan_times_ms``).
"""
from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .energy_shaping import (GOAL_QPOS, EnergyShapingController, LearnedModel, default_gains,
                                   frame_energy, goal_keypoints)
from keycld.tasks import check_environment
from keycld_gym import functional as F
from keycld import systems as R
from keycld_gym.loading import pose_keypoints

KINDS = ("grad", "cem")
# Hanging poses (qpos) of the real systems, for the energy scale E* − E_down.
DOWN_QPOS = {"pendulum": (np.pi,), "cartpole": (0.0, np.pi), "acrobot": (np.pi, 0.0)}
# The cartpole's dense term: the sparse reward's cart bound (±0.25 m, dm_control), a 1 m margin,
# and a 1 m/s margin on the cart's speed (a cart drifting off under a balanced pole is penalised).
CART_CENTER_M, CART_MARGIN_M, CART_SPEED_MARGIN = 0.25, 1.0, 1.0


@dataclasses.dataclass(frozen=True)
class MPCConfig:
    """Settings of a planner (hashable: it is a static argument of the jitted planners).

    horizon: planned control steps H. iterations: Adam steps (grad) or CEM rounds (cem) per
    control step. learning_rate: Adam step size on z (grad). population, elites, alpha: CEM
    samples per round, elites refitted, smoothing of mean/std (new = α·old + (1 − α)·fit).
    init_std: CEM's initial std each control step. init_noise: std of the seeded first plan
    (in z for grad, in actions for cem). z_max: bound of the unconstrained plan (grad).
    action_limit: the plan's actions lie in [-action_limit, action_limit] ⊆ the Box [-1, 1]
    (the dual-mode catch keeps the whole Box).
    dense_weight, terminal_weight: w_dense, w_terminal of the planning objective.
    energy_margin: the terminal term aims at E* − energy_margin·(E* − E_down) (a learned energy
    that is too low at speed brings the pole over the top too fast when aimed at E*).
    integrator, substeps: the model's integration in the plan (None: the model's training solver).
    catch: dual-mode MPC: near the goal, where the energy-shaping controller's LQR catch would
    act inside the Box (its switching rule), the LQR acts instead of the planner.
    """

    horizon: int = 40
    iterations: int = 10
    learning_rate: float = 0.1
    population: int = 200
    elites: int = 20
    alpha: float = 0.1
    init_std: float = 0.5
    init_noise: float = 0.1
    z_max: float = 3.0
    dense_weight: float = 1.0
    terminal_weight: float = 0.0
    integrator: str | None = None
    substeps: int = 1
    catch: bool = False
    action_limit: float = 1.0
    energy_margin: float = 0.0

    def __post_init__(self):
        for name in ("horizon", "iterations", "population", "elites", "substeps"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.elites > self.population:
            raise ValueError(f"elites ({self.elites}) must be <= population ({self.population})")
        for name in ("learning_rate", "init_std", "z_max"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("init_noise", "dense_weight", "terminal_weight", "energy_margin"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not (np.isfinite(self.action_limit) and 0.0 < self.action_limit <= 1.0):
            raise ValueError(f"action_limit must be in (0, 1], got {self.action_limit!r}")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha!r}")
        if self.integrator not in (None, *F.INTEGRATORS):
            raise ValueError(f"unknown integrator {self.integrator!r}; allowed: {', '.join(F.INTEGRATORS)}")


# Defaults per (kind, system). Pendulum (dt 0.02 s): H = 40 is 0.8 s, about half a swing.
# Cartpole and acrobot (dt 0.01 s): H = 80 is 0.8 s. The pendulum and the cartpole plan in dual
# mode (the LQR holds the pole near the top): on the shipped pendulum model the plans alone swing
# the pole up but hold it bang-bang around the top, and the reward alone lets a balanced cart drift
# away. The cartpole's dense term keeps the cart near the centre and slow; the acrobot's reward
# vanishes far from the target, hence the dense tip height and the energy terminal term.
# Success rates: benchmarks/results/control.md; the traced episodes behind these choices:
# benchmarks/results/history/README.md.
DEFAULTS: dict[tuple[str, str], MPCConfig] = {
    ("grad", "pendulum"): MPCConfig(horizon=40, iterations=10, learning_rate=0.3, catch=True),
    ("cem", "pendulum"): MPCConfig(horizon=40, iterations=3, population=100, elites=10, catch=True),
    ("grad", "cartpole"): MPCConfig(horizon=80, iterations=10, learning_rate=0.3, dense_weight=1.0, catch=True),
    ("cem", "cartpole"): MPCConfig(horizon=80, iterations=3, population=100, elites=10, dense_weight=1.0,
                                   catch=True),
    ("grad", "acrobot"): MPCConfig(horizon=80, iterations=10, learning_rate=0.3, terminal_weight=1.0),
    ("cem", "acrobot"): MPCConfig(horizon=80, iterations=3, population=100, elites=10, terminal_weight=1.0),
}
# The underactuated cartpole (only the cart pushed). Full-force plans carry the cart out of the
# camera's view (as they do for the energy law, see ``energy_shaping.Gains``), so the plans use
# half force (action_limit 0.5). A 0.8 s horizon pumps so slowly that the catch takes the pole
# late with the cart still fast, so H = 120 (1.2 s). The terminal term (weight 30) on the pole's
# energy in the cart's frame aims 0.28·(E* − E_down) below E* (the energy law's margin of 0.4
# model units): the total energy would count racing the cart as progress. The dense term is
# down-weighted to 0.1, so pumping is not traded for height within the horizon.
# Success rates: benchmarks/results/control.md; the traced episodes behind these choices:
# benchmarks/results/history/README.md.
UNDERACTUATED_DEFAULTS: dict[tuple[str, str], MPCConfig] = {
    ("grad", "cartpole"): MPCConfig(horizon=120, iterations=10, learning_rate=0.3, dense_weight=0.1, catch=True,
                                    action_limit=0.5, terminal_weight=30.0, energy_margin=0.28),
    ("cem", "cartpole"): MPCConfig(horizon=120, iterations=3, population=100, elites=10, dense_weight=0.1,
                                   catch=True, action_limit=0.5, terminal_weight=30.0, energy_margin=0.28),
}


def default_config(kind: str, system: str, underactuated: bool = False) -> MPCConfig:
    """The documented planner defaults of ``kind`` on ``system`` (``UNDERACTUATED_DEFAULTS`` for
    the underactuated cartpole)."""
    check_environment(system)
    if kind not in KINDS:
        raise ValueError(f"unknown planner kind {kind!r}; allowed: {', '.join(KINDS)}")
    if underactuated and (kind, system) in UNDERACTUATED_DEFAULTS:
        return UNDERACTUATED_DEFAULTS[(kind, system)]
    return DEFAULTS[(kind, system)]


# ---------------------------------------------------------------------------------------------
# The planning objective
# ---------------------------------------------------------------------------------------------
def dense_progress(system: str, x: jnp.ndarray, xd: jnp.ndarray) -> jnp.ndarray:
    """The dense surrogate d(x) ∈ [0, 1] (1 at the goal) of ``system``."""
    if system == "pendulum":
        return (1.0 + R.pendulum_quantities(x, xd)[0]) / 2.0
    if system == "cartpole":
        cart, cos, _ = R.cartpole_quantities(x, xd)
        cart_velocity = xd[0] * R.METRES_PER_UNIT["cartpole"]
        centered = R.tolerance(cart, -CART_CENTER_M, CART_CENTER_M, margin=CART_MARGIN_M)
        still = R.tolerance(cart_velocity, margin=CART_SPEED_MARGIN)
        return (1.0 + cos) / 2.0 * (1.0 + centered) / 2.0 * (1.0 + still) / 2.0
    if system == "acrobot":
        return (R.acrobot_tip(x)[1] / (2.0 * R.ACROBOT_LINK) + 1.0) / 2.0
    raise ValueError(f"unknown system {system!r}; allowed: pendulum, cartpole, acrobot")


def terminal_energy(params: F.EnvParams, state: F.EnvState) -> jnp.ndarray:
    """The learned energy of ``state`` in the actuated base's frame (the terminal term's E)."""
    return frame_energy(params, state.x, state.xd)


def plan_return(params: F.EnvParams, cfg: MPCConfig, actions: jnp.ndarray, state: F.EnvState,
                energy_ref: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(J(actions), predicted observations (H, 4K)) of a plan (H, A) in [-1, 1] from ``state``.

    ``params`` must already carry the planner's integrator (``MPCAgent.params``); ``energy_ref``
    is (E_target, E* − E_down) for the terminal term (ignored when ``cfg.terminal_weight`` is 0).
    """
    system = params.model.environment

    def body(s, a):
        s, obs, r, _, _ = F.step(s, a, params)
        if cfg.dense_weight > 0:
            r = r + cfg.dense_weight * dense_progress(system, s.x, s.xd)
        return s, (r, obs)

    last, (rewards, obs) = jax.lax.scan(body, state, actions)
    total = rewards.sum()
    if cfg.terminal_weight > 0 and params.model.dynamics.lagrangian:
        e = terminal_energy(params, last)
        total = total - cfg.terminal_weight * ((e - energy_ref[0]) / energy_ref[1]) ** 2
    return total, obs


def _shift(plan: jnp.ndarray) -> jnp.ndarray:
    """Warm start: drop the executed first step, repeat the last one."""
    return jnp.concatenate([plan[1:], plan[-1:]], axis=0)


@partial(jax.jit, static_argnames=("cfg",))
def _plan_grad(params, cfg: MPCConfig, z_prev, obs, mask, energy_ref):
    """Adam on z for ``cfg.iterations`` steps; returns (best z, its actions, J, predicted obs)."""
    state = F.state_from_vector(obs)
    z0 = jnp.clip(_shift(z_prev), -cfg.z_max, cfg.z_max)
    opt = optax.adam(cfg.learning_rate)

    def objective(z):
        return plan_return(params, cfg, cfg.action_limit * jnp.tanh(z) * mask, state, energy_ref)

    value_and_grad = jax.value_and_grad(objective, has_aux=True)

    def keep_best(z, j, pred, best):
        better = j > best[1]
        return jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), (z, j, pred), best)

    def it(_, carry):
        z, opt_state, best = carry
        (j, pred), g = value_and_grad(z)
        best = keep_best(z, j, pred, best)
        updates, opt_state = opt.update(-g, opt_state, z)
        z = jnp.clip(optax.apply_updates(z, updates), -cfg.z_max, cfg.z_max)
        return z, opt_state, best

    h, d = cfg.horizon, 2 * params.dim
    best0 = (z0, jnp.asarray(-jnp.inf, jnp.float32), jnp.zeros((h, d), jnp.float32))
    z, _, best = jax.lax.fori_loop(0, cfg.iterations, it, (z0, opt.init(z0), best0))
    best_z, j, pred = keep_best(z, *objective(z), best)  # the last iterate, never evaluated in the loop
    return best_z, cfg.action_limit * jnp.tanh(best_z) * mask, j, pred


@partial(jax.jit, static_argnames=("cfg",))
def _plan_cem(params, cfg: MPCConfig, mean_prev, obs, mask, energy_ref, key):
    """CEM rounds; returns (best plan, J, predicted obs)."""
    state = F.state_from_vector(obs)
    mean0 = _shift(mean_prev)
    std0 = jnp.full_like(mean0, cfg.init_std)

    def evaluate(actions):
        return plan_return(params, cfg, actions, state, energy_ref)[0]

    def round_(carry, inp):
        mean, std, best, best_j = carry
        k, first = inp
        noise = jax.random.normal(k, (cfg.population,) + mean.shape)
        noise = noise.at[0].set(jnp.where(first, 0.0, noise[0]))  # round 0 also tries the mean
        samples = jnp.clip(mean + std * noise, -cfg.action_limit, cfg.action_limit) * mask
        returns = jax.vmap(evaluate)(samples)
        returns = jnp.where(jnp.isfinite(returns), returns, -jnp.inf)
        top_j, top = jax.lax.top_k(returns, cfg.elites)
        elites = samples[top]
        mean = cfg.alpha * mean + (1 - cfg.alpha) * elites.mean(0)
        std = cfg.alpha * std + (1 - cfg.alpha) * elites.std(0)
        better = top_j[0] > best_j
        best = jnp.where(better, elites[0], best)
        best_j = jnp.where(better, top_j[0], best_j)
        return (mean, std, best, best_j), None

    keys = jax.random.split(key, cfg.iterations)
    first = jnp.arange(cfg.iterations) == 0
    init = (mean0, std0, jnp.clip(mean0, -cfg.action_limit, cfg.action_limit) * mask,
            jnp.asarray(-jnp.inf, jnp.float32))
    (_, _, best, _), _ = jax.lax.scan(round_, init, (keys, first))
    j, pred = plan_return(params, cfg, best, state, energy_ref)
    return best, j, pred


# ---------------------------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------------------------
def energy_reference(system: str, params: F.EnvParams) -> np.ndarray:
    """(E*, E* − E_down): the learned energy of the upright pose at rest and the energy scale."""
    dyn, w = params.model.dynamics, params.weights["dynamics"]
    e = [float(dyn.energy(w, jnp.asarray(x), jnp.zeros_like(jnp.asarray(x))))
         for x in (pose_keypoints(system, params, q)
                   for q in (GOAL_QPOS[system], DOWN_QPOS[system]))]
    scale = e[0] - e[1]
    if not np.isfinite(scale) or abs(scale) < 1e-6:
        scale = 1.0  # a model whose upright and hanging poses share an energy: no useful scale
    return np.array([e[0], scale], np.float32)


class MPCAgent:
    """Receding-horizon planner on a trained model (an ``agents.base.Agent``).

    Args:
        params: ``EnvParams`` of the model (``keycld_gym.loading.load_model_params``).
        kind: "grad" or "cem". config: ``MPCConfig`` (default ``default_config(kind, system,
        underactuated)``).
        underactuated: cartpole only, the pole torque held at 0. seed: planner randomness.

    Attributes:
        last_plan_time_ms: wall time of the latest ``plan`` (compilation included on the first).
        last_return: J of the executed plan; last_prediction: its predicted observations (H, 4K).
    """

    def __init__(self, params: F.EnvParams, kind: str, config: MPCConfig | None = None,
                 underactuated: bool = False, seed: int = 0):
        if kind not in KINDS:
            raise ValueError(f"unknown planner kind {kind!r}; allowed: {', '.join(KINDS)}")
        system = params.model.environment
        check_environment(system)
        if underactuated and system != "cartpole":
            raise ValueError(f"underactuated is defined for the cartpole only, not {system!r}")
        self.kind, self.system, self.seed = kind, system, int(seed)
        self.config = config or default_config(kind, system, underactuated)
        cfg = self.config
        integrator = cfg.integrator or params.model.solver
        if integrator not in F.INTEGRATORS:  # e.g. a model trained with an adaptive solver
            integrator = "rk4"
        self.params = params.replace(integrator=integrator, substeps=cfg.substeps)
        self.num_actions = params.model.num_actions
        mask = np.ones(self.num_actions, np.float32)
        if underactuated:
            mask[1:] = 0.0
        self.mask = jnp.asarray(mask)
        self.underactuated = underactuated
        use_energy = cfg.terminal_weight > 0 and params.model.dynamics.lagrangian
        ref = energy_reference(system, params) if use_energy else np.ones(2, np.float32)
        ref[0] -= cfg.energy_margin * ref[1]  # the terminal term's target E_target
        self.energy_ref = jnp.asarray(ref)
        self._resets = 0
        self._catch = None
        if cfg.catch:
            model = LearnedModel(params, goal_keypoints(system, params))
            self._catch = EnergyShapingController(model, default_gains("learned", system, underactuated),
                                                  underactuated)
        self.last_mode = "plan"
        self.plan_times_ms: list[float] = []
        self.last_plan_time_ms = float("nan")
        self.last_return = float("nan")
        self.last_prediction: np.ndarray | None = None
        self._start_episode(0)

    def _start_episode(self, episode: int) -> None:
        self.episode, self.steps = int(episode), 0
        self._key = jax.random.fold_in(jax.random.PRNGKey(self.seed), self.episode)
        noise = self.config.init_noise * jax.random.normal(self._key, (self.config.horizon, self.num_actions))
        # _shift drops the first row: the plan of step 0 starts from the noise itself.
        self._warm = jnp.concatenate([noise[:1], noise], axis=0)[:-1] * self.mask

    def reset(self, env=None, obs: np.ndarray | None = None, info: dict[str, Any] | None = None) -> None:
        """Start an episode: forget the warm start; the episode's keys derive from ``info["seed"]``
        (the episode seed) when given, else from the number of resets so far."""
        self._resets += 1
        if self._catch is not None:
            self._catch.reset(env, obs, info)
        self.plan_times_ms = []
        seed = (info or {}).get("seed")
        self._start_episode(self._resets if seed is None else int(seed))

    def plan(self, obs: np.ndarray) -> np.ndarray:
        """Optimise the plan from the keypoint state ``obs`` (4K,); returns it, (H, A) in [-1, 1].

        Advances the warm start and the step counter (the next call plans the next step)."""
        t0 = time.perf_counter()
        obs = jnp.asarray(np.asarray(obs, np.float32))
        if obs.shape != (2 * self.params.dim,):
            raise ValueError(f"obs must be the keypoint state [x, ẋ] of shape ({2 * self.params.dim},), "
                             f"got {obs.shape}")
        if self.kind == "grad":
            z, actions, j, pred = _plan_grad(self.params, self.config, self._warm, obs, self.mask,
                                             self.energy_ref)
            self._warm = z
        else:
            key = jax.random.fold_in(self._key, self.steps)
            actions, j, pred = _plan_cem(self.params, self.config, self._warm, obs, self.mask,
                                         self.energy_ref, key)
            self._warm = actions
        plan = np.clip(np.asarray(actions, np.float32), -1.0, 1.0)
        self.steps += 1
        self.last_return = float(j)
        self.last_prediction = np.asarray(pred)
        self.last_plan_time_ms = 1e3 * (time.perf_counter() - t0)
        self.plan_times_ms.append(self.last_plan_time_ms)
        return plan

    def act(self, obs: np.ndarray, info: dict[str, Any] | None = None) -> np.ndarray:
        """The first action of a fresh plan (or, in dual mode near the goal, the LQR's), (A,)
        float32 in [-1, 1]."""
        if self._catch is None:
            self.last_mode = "plan"
            return self.plan(obs)[0]
        # dual mode: both modes see the catch controller's state (through its observer, if any)
        s = self._catch.state(np.asarray(obs, np.float32), info or {})
        u = self._catch.try_catch(s)
        if u is not None:
            self.last_mode = "catch"
            action = np.clip(u * np.asarray(self.mask), -1.0, 1.0).astype(np.float32)
        else:
            self.last_mode = "plan"
            action = self.plan(np.concatenate(s))[0]
        self._catch.last_action = action
        return action


def make_mpc(system: str, kind: str, checkpoint=None, underactuated: bool = False, seed: int = 0,
             **overrides) -> MPCAgent:
    """An ``MPCAgent`` on a trained model (default: the shipped model of ``system``).

    ``overrides`` replace fields of ``default_config(kind, system, underactuated)`` (e.g.
    ``horizon=30``).
    """
    from keycld_gym.loading import load_model_params

    defaults = default_config(kind, system, underactuated)  # checks the system and the kind
    if underactuated and system != "cartpole":
        raise ValueError(f"underactuated is defined for the cartpole only, not {system!r}")
    fields = {f.name for f in dataclasses.fields(MPCConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown planner settings {sorted(unknown)}; allowed: {', '.join(sorted(fields))}")
    config = dataclasses.replace(defaults, **overrides)
    params = load_model_params(system, checkpoint)
    return MPCAgent(params, kind, config, underactuated=underactuated, seed=seed)


__all__ = ["DEFAULTS", "KINDS", "UNDERACTUATED_DEFAULTS", "MPCAgent", "MPCConfig", "default_config",
           "dense_progress", "energy_reference", "make_mpc", "plan_return", "terminal_energy"]
