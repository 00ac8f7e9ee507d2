"""Learned dynamics in keypoint coordinates: constrained Lagrangian (KeyCLD) and ablations.

State: x (2K,) keypoint positions in image units, ẋ (2K,) in image units per second;
u (A,) actions in dataset units (±2 per actuator).

Lagrangian L = ½ ẋᵀ M ẋ − V(x), M = diag(m_k² repeated for x and y), f = −∇V(x) + B(x) u,
D = ∂Φ/∂x, and
    λ = (D M⁻¹ Dᵀ)⁻¹ (D M⁻¹ f + (∂²Φ/∂x²)[ẋ, ẋ]),    ẍ = M⁻¹ (f − Dᵀ λ).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from keycld.model import constraints as C
from keycld.system import System

DYNAMICS_KINDS = ("keycld", "no_constraint", "node2")


class MLP(nn.Module):
    features: Sequence[int]
    activation: str = "celu"
    init_std: float | None = None  # None: Flax default (lecun normal)

    @nn.compact
    def __call__(self, x):
        act = getattr(nn, self.activation)
        kinit = nn.initializers.normal(self.init_std) if self.init_std else nn.initializers.lecun_normal()
        for i, f in enumerate(self.features):
            x = nn.Dense(f, kernel_init=kinit)(x)
            if i < len(self.features) - 1:
                x = act(x)
        return x


class LagrangianNets(nn.Module):
    """Point masses, potential V(x) and input matrix B(x) (the learned parts of KeyCLD)."""

    num_keypoints: int
    num_actions: int
    hidden: int

    def setup(self):
        k, a, h = self.num_keypoints, self.num_actions, self.hidden
        self.mass_root = self.param("mass_root", nn.initializers.ones, (k,))
        self.potential_net = MLP((h, h, 1), "celu", init_std=0.01)
        self.input_net = MLP((h, h, 2 * k * a), "celu")

    def masses(self) -> jnp.ndarray:
        """Diagonal of M, (2K,)."""
        return jnp.repeat(self.mass_root ** 2, 2)

    def potential(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.potential_net(x)[..., 0]

    def input_matrix(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.input_net(x).reshape(*x.shape[:-1], 2 * self.num_keypoints, self.num_actions)

    def __call__(self, x):
        return self.masses(), self.potential(x), self.input_matrix(x)


class SecondOrderODE(nn.Module):
    """Ablation "node2": ẍ = MLP([x, ẋ, u]) with three hidden layers of 2h."""

    num_keypoints: int
    hidden: int

    @nn.compact
    def __call__(self, x, xd, u):
        h2 = 2 * self.hidden
        return MLP((h2, h2, h2, 2 * self.num_keypoints), "celu")(jnp.concatenate([x, xd, u], -1))


@dataclasses.dataclass(frozen=True)
class Dynamics:
    """Pure functions of (params, state) for one system and dynamics kind.

    ``params`` is the ``{"params": ...}`` tree returned by ``init``. A "keycld" model of a
    System without constraints (``constraint=None``) is unconstrained.
    """

    system: System
    kind: str
    hidden: int

    def __post_init__(self):
        if self.kind not in DYNAMICS_KINDS:
            raise ValueError(f"unknown dynamics {self.kind!r}; allowed: {', '.join(DYNAMICS_KINDS)}")

    @property
    def constrained(self) -> bool:
        return self.kind == "keycld" and self.system.constrained

    @property
    def lagrangian(self) -> bool:
        return self.kind in ("keycld", "no_constraint")

    @property
    def phi(self) -> C.Constraint:
        """The System's Φ (x -> (C,)); x -> (0,) for a System without constraints."""
        if self.system.constraint is None:
            return lambda x: jnp.zeros((0,), x.dtype)
        return self.system.constraint

    def _module(self) -> nn.Module:
        if self.lagrangian:
            return LagrangianNets(self.system.num_keypoints, self.system.action_dim, self.hidden)
        return SecondOrderODE(self.system.num_keypoints, self.hidden)

    def init(self, key: jax.Array) -> dict:
        x, u = jnp.zeros(self.system.state_dim), jnp.zeros(self.system.action_dim)
        if self.lagrangian:
            return self._module().init(key, x)
        return self._module().init(key, x, x, u)

    def _need_lagrangian(self, what: str) -> None:
        if not self.lagrangian:
            raise ValueError(f"{what} is defined only for Lagrangian models, not {self.kind!r}")

    # ---- the learned physical quantities -------------------------------------------------
    def masses(self, params) -> jnp.ndarray:
        """Diagonal of the mass matrix M, (2K,)."""
        self._need_lagrangian("M")
        return self._module().apply(params, method=LagrangianNets.masses)

    def potential(self, params, x: jnp.ndarray) -> jnp.ndarray:
        """V(x), scalar, for x (2K,)."""
        self._need_lagrangian("V")
        return self._module().apply(params, x, method=LagrangianNets.potential)

    def input_matrix(self, params, x: jnp.ndarray) -> jnp.ndarray:
        """B(x), (2K, A)."""
        self._need_lagrangian("B")
        return self._module().apply(params, x, method=LagrangianNets.input_matrix)

    def energy(self, params, x: jnp.ndarray, xd: jnp.ndarray) -> jnp.ndarray:
        """Total energy E = ½ ẋᵀ M ẋ + V(x), scalar."""
        return 0.5 * jnp.sum(self.masses(params) * xd * xd) + self.potential(params, x)

    def constraint_residual(self, x: jnp.ndarray) -> jnp.ndarray:
        """Φ(x), (C,)."""
        return self.phi(x)

    def project_velocity(self, x: jnp.ndarray, xd: jnp.ndarray) -> jnp.ndarray:
        """Tangent-space projection for constrained models; identity otherwise."""
        return C.project_velocity(self.phi, x, xd) if self.constrained else xd

    def acceleration(self, params, x: jnp.ndarray, xd: jnp.ndarray, u: jnp.ndarray) -> jnp.ndarray:
        """ẍ(x, ẋ, u), (2K,), for x, ẋ (2K,) and u (A,)."""
        if not self.lagrangian:
            return self._module().apply(params, x, xd, u)
        m = self.masses(params)
        f = -jax.grad(self.potential, argnums=1)(params, x) + self.input_matrix(params, x) @ u
        if not self.constrained:
            return f / m
        d = C.jacobian(self.phi, x)
        dminv = d / m  # D M⁻¹, (C, 2K)
        lam = C.gram_solve(dminv @ d.T, dminv @ f + C.curvature(self.phi, x, xd))
        return (f - d.T @ lam) / m
