"""Holonomic constraints Φ(x) = 0 in keypoint image coordinates: Jacobians, projections.

A constraint is a pure JAX function ``x (2K,) -> Φ(x) (C,)`` (``keycld.System.constraint``);
everything here derives from it by automatic differentiation. The paper's constraints are in
:mod:`keycld.systems`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Constraint = Callable[[jnp.ndarray], jnp.ndarray]


def jacobian(phi: Constraint, x: jnp.ndarray) -> jnp.ndarray:
    """D = ∂Φ/∂x, shape (C, 2K)."""
    return jax.jacfwd(phi)(x)


def curvature(phi: Constraint, x: jnp.ndarray, xd: jnp.ndarray) -> jnp.ndarray:
    """(∂²Φ/∂x²)[ẋ, ẋ] = d/dt(D ẋ) at fixed ẋ, shape (C,)."""
    d_xd = lambda y: jax.jvp(phi, (y,), (xd,))[1]
    return jax.jvp(d_xd, (x,), (xd,))[1]


# Tikhonov term for the (C×C) Gram matrices: D's rows are unit-scale, so 1e-9 changes nothing
# on a regular configuration and keeps the solve finite at a singular one (two keypoints on
# top of each other, e.g. from an untrained encoder).
GRAM_EPS = 1e-9


def gram_solve(g: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solve (G + εI) y = b for a symmetric positive semi-definite Gram matrix G (C, C).

    C = 1 and C = 2 (the paper's systems) use the closed form, C ≥ 3 an LU solve: under ``vmap``
    a batched LU of tiny matrices costs several times the rest of a dynamics step. For C = 2 the
    determinant is kept at or above its lower bound for a regularised PSD matrix, ε·trace, so
    rounding near a singular configuration cannot flip its sign."""
    c = g.shape[0]
    g = g + GRAM_EPS * jnp.eye(c, dtype=g.dtype)
    if c == 1:
        return b / g[0, 0]
    if c == 2:
        det = jnp.maximum(g[0, 0] * g[1, 1] - g[0, 1] * g[1, 0], GRAM_EPS * (g[0, 0] + g[1, 1]))
        return jnp.stack([g[1, 1] * b[0] - g[0, 1] * b[1], g[0, 0] * b[1] - g[1, 0] * b[0]]) / det
    return jnp.linalg.solve(g, b)


def project_velocity(phi: Constraint, x: jnp.ndarray, xd: jnp.ndarray) -> jnp.ndarray:
    """ẋ − D⁺ D ẋ: the velocity's component in the constraint tangent space, shape (2K,)."""
    d = jacobian(phi, x)
    return xd - d.T @ gram_solve(d @ d.T, d @ xd)


def shifted(phi: Constraint, offset: jnp.ndarray | None) -> Constraint:
    """x ↦ Φ(x) − c, the constraint of the level set Φ(x) = c (``phi`` itself for c = None)."""
    if offset is None:
        return phi
    return lambda x: phi(x) - offset


def project_state(phi: Constraint, x: jnp.ndarray, xd: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """x onto Φ(x) = 0 (``project_position``), then ẋ onto its tangent space there."""
    x = project_position(phi, x)
    return x, project_velocity(phi, x, xd)


def project_position(phi: Constraint, x: jnp.ndarray, iterations: int = 3) -> jnp.ndarray:
    """Gauss–Newton steps x ← x − D⁺ Φ(x) back onto Φ(x) = 0 (minimal-norm correction)."""
    def body(_, y):
        d = jacobian(phi, y)
        return y - d.T @ gram_solve(d @ d.T, phi(y))
    return jax.lax.fori_loop(0, iterations, body, x)
