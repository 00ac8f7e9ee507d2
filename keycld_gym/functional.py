"""The learned environment as pure JAX functions (gymnax style).

Everything the Gymnasium env, the vector env and planners need is here, written once:

    state = reset(key, params)                          # draw an encoded initial state
    state, obs, reward, truncated, info = step(state, action, params)
    image = render(state, params)                       # (64, 64, 3) uint8, learned renderer

``params`` is an :class:`EnvParams` (learned weights, reset bank, static settings); ``state``
an :class:`EnvState`. All functions jit, vmap and differentiate (with respect to state and
actions), e.g. the gradient of an H-step return::

    def ret(actions):                                   # actions (H, A) in [-1, 1]
        def body(s, a):
            s, _, r, _, _ = step(s, a, params)
            return s, r
        return jax.lax.scan(body, state, actions)[1].sum()
    jax.grad(ret)(actions)

Units: keypoints x in image units ([-1, 1] spans the image, y up), ẋ in image units per
second; actions in [-1, 1], multiplied by ``action_scale`` (the System's: the data's action
units) before they reach the dynamics.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from keycld.model import constraints as C
from keycld.model.keycld import KeyCLD

INTEGRATORS = ("rk4", "euler")


@struct.dataclass
class EnvState:
    """x (2K,), ẋ (2K,) keypoint state; t: control steps since reset (int32)."""

    x: jnp.ndarray
    xd: jnp.ndarray
    t: jnp.ndarray


@struct.dataclass
class EnvParams:
    """Learned weights, the bank of encoded initial states and static settings.

    Attributes:
        weights: KeyCLD parameter tree.
        bank: (N, 4K) encoded initial states [x, ẋ] from the real task's reset distribution.
        model: the KeyCLD description (static).
        integrator: "rk4" (default) or "euler"; substeps per control step.
        action_scale: actions in [-1, 1] are multiplied by this (data units; the System's).
        max_steps: episode length (truncation), 1000 as in dm_control.
        position_limit, velocity_limit: the state saturates at these bounds (image units and
            image units per second); ``info["saturated"]`` reports when it does.
        constraint_offset: (C,) level c of the manifold Φ(x) = c the encoder's keypoints lie
            on (``keycld_gym.loading.constraint_offset``); None means c = 0, the paper's lengths.
            The dynamics conserve Φ whatever c is; c only says where projections go.
    """

    weights: Any
    bank: jnp.ndarray
    model: KeyCLD = struct.field(pytree_node=False)
    integrator: str = struct.field(pytree_node=False, default="rk4")
    substeps: int = struct.field(pytree_node=False, default=4)
    action_scale: float = struct.field(pytree_node=False, default=2.0)
    max_steps: int = struct.field(pytree_node=False, default=1000)
    position_limit: float = struct.field(pytree_node=False, default=3.0)
    velocity_limit: float = struct.field(pytree_node=False, default=60.0)
    constraint_offset: jnp.ndarray | None = None

    @property
    def dim(self) -> int:
        return 2 * self.model.num_keypoints


def state_from_vector(vec: jnp.ndarray, t: int | jnp.ndarray = 0) -> EnvState:
    """[x, ẋ] (..., 4K) -> EnvState (a batch of vectors gives a batch of states, t broadcast)."""
    d = vec.shape[-1] // 2
    return EnvState(vec[..., :d], vec[..., d:], jnp.broadcast_to(jnp.asarray(t, jnp.int32), vec.shape[:-1]))


def observe(state: EnvState) -> jnp.ndarray:
    """Observation [x, ẋ], (4K,) float32."""
    return jnp.concatenate([state.x, state.xd], axis=-1).astype(jnp.float32)


def reset(key: jax.Array, params: EnvParams) -> EnvState:
    """Uniformly draw one of the bank's encoded initial states."""
    idx = jax.random.randint(key, (), 0, params.bank.shape[0])
    return state_from_vector(params.bank[idx])


def manifold(params: EnvParams) -> C.Constraint:
    """x ↦ Φ(x) − c: the constraint whose zero set the learned env's states lie on."""
    return C.shifted(params.model.dynamics.phi, params.constraint_offset)


def project(x: jnp.ndarray, xd: jnp.ndarray, params: EnvParams) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Back onto Φ(x) = c and its tangent space (constrained models only)."""
    if not params.model.dynamics.constrained:
        return x, xd
    return C.project_state(manifold(params), x, xd)


MANIFOLD_TOL = 1e-5  # image units (per second for ẋ): a state this close to the manifold counts as on it


def snap_to_manifold(state: EnvState, params: EnvParams) -> EnvState:
    """``state`` itself when Φ(x) = c and ẋ is tangent (within ``MANIFOLD_TOL``), else its
    projection: an encoded state passes through bit for bit, an off-manifold one is fixed."""
    if not params.model.dynamics.constrained:
        return state
    tangent = C.jacobian(manifold(params), state.x) @ state.xd
    on = (constraint_residual(state, params) <= MANIFOLD_TOL) & (jnp.max(jnp.abs(tangent)) <= MANIFOLD_TOL)
    x, xd = project(state.x, state.xd, params)
    return EnvState(jnp.where(on, state.x, x), jnp.where(on, state.xd, xd), state.t)


def energy(state: EnvState, params: EnvParams) -> jnp.ndarray:
    """Total learned energy E(x, ẋ) (NaN for the non-Lagrangian node2 ablation)."""
    if not params.model.dynamics.lagrangian:
        return jnp.asarray(jnp.nan, jnp.float32)
    return params.model.dynamics.energy(params.weights["dynamics"], state.x, state.xd)


def constraint_residual(state: EnvState, params: EnvParams) -> jnp.ndarray:
    """max |Φ(x) − c| (0 for models without constraints)."""
    if not params.model.dynamics.constrained:
        return jnp.zeros((), jnp.float32)
    return jnp.max(jnp.abs(manifold(params)(state.x)))


def reward(state: EnvState, ctrl: jnp.ndarray, params: EnvParams) -> jnp.ndarray:
    """The System's reward of (x, ẋ, ctrl) (ctrl in data units), 0 for a System without one."""
    fn = params.model.system.reward
    if fn is None:
        return jnp.zeros((), jnp.float32)
    return jnp.asarray(fn(state.x, state.xd, ctrl)).astype(jnp.float32)


def step(state: EnvState, action: jnp.ndarray, params: EnvParams):
    """One control step (the System's dt) of the learned constrained dynamics.

    Args:
        state: current state; action: (A,) in [-1, 1] (not checked here; the Gymnasium
            shells validate).
    Returns:
        (next state, observation (4K,), reward, truncated, info) with info holding
        ``energy``, ``constraint_residual`` and ``saturated``.
    """
    ctrl = action * params.action_scale
    xs, xds = params.model.rollout(params.weights, state.x, state.xd, ctrl, 1,
                                   solver=params.integrator, substeps=params.substeps)
    x, xd = project(xs[0], xds[0], params)
    xc = jnp.clip(x, -params.position_limit, params.position_limit)
    xdc = jnp.clip(xd, -params.velocity_limit, params.velocity_limit)
    saturated = jnp.any(xc != x) | jnp.any(xdc != xd)
    new = EnvState(xc, xdc, state.t + 1)
    info = {"energy": energy(new, params), "constraint_residual": constraint_residual(new, params),
            "saturated": saturated}
    return new, observe(new), reward(new, ctrl, params), new.t >= params.max_steps, info


def render(state: EnvState, params: EnvParams) -> jnp.ndarray:
    """(64, 64, 3) uint8 image of the state through the learned renderer."""
    img = params.model.render(params.weights, state.x[None])[0]
    return jnp.round(jnp.clip(img, 0.0, 1.0) * 255.0).astype(jnp.uint8)


DEFAULT_SUBSTEPS = 4  # integrator sub-steps per control step when a model records no measured choice
SUBSTEP_CANDIDATES = (1, 2, 4, 8)
SUBSTEP_TOL = 1e-4  # image units: 1/300 of a pixel (a pixel spans 2/64 image units)


def integration_error(params: EnvParams, substeps: int, reference: int = 16, horizon: int = 50, num: int = 256,
                      key: jax.Array | None = None) -> float:
    """Median over ``num`` rollouts of the largest keypoint deviation (image units) between
    ``substeps`` and ``reference`` sub-steps per control step, over ``horizon`` steps from bank
    states with uniform random actions."""
    key = jax.random.PRNGKey(0) if key is None else key
    k0, k1 = jax.random.split(key)
    start = jax.vmap(reset, in_axes=(0, None))(jax.random.split(k0, num), params)
    actions = jax.random.uniform(k1, (horizon, num, params.model.system.action_dim), minval=-1.0, maxval=1.0)

    err = jnp.abs(_positions(params.replace(substeps=substeps), start, actions)
                  - _positions(params.replace(substeps=reference), start, actions))
    return float(jnp.median(jnp.max(err, axis=(0, 2))))


@jax.jit
def _positions(params: EnvParams, start: EnvState, actions: jnp.ndarray) -> jnp.ndarray:
    """Keypoint positions (T, N, 2K) of N rollouts under actions (T, N, A)."""
    def body(s, a):
        s, *_ = jax.vmap(step, in_axes=(0, 0, None))(s, a, params)
        return s, s.x
    return jax.lax.scan(body, start, actions)[1]


def choose_substeps(params: EnvParams, tol: float = SUBSTEP_TOL, candidates=SUBSTEP_CANDIDATES,
                    **kwargs) -> tuple[int, dict[int, float]]:
    """The fewest sub-steps whose :func:`integration_error` is at most ``tol`` (the largest
    candidate if none is), and the error of each candidate tried."""
    errors = {}
    for s in candidates:
        errors[s] = integration_error(params, s, **kwargs)
        if errors[s] <= tol:
            return s, errors
    return candidates[-1], errors
