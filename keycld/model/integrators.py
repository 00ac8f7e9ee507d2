"""Integrators for second-order dynamics ẍ = a(x, ẋ) with a constant action over each step.


``step(accel, x, xd, dt)`` returns the state one step of length dt later. ``rollout`` scans
it (``rollout_actions``: one action per step). "dopri" integrates each interval with diffrax's adaptive Dopri5.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Accel = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
SOLVERS = ("euler", "rk4", "dopri")


def euler(accel: Accel, x, xd, dt):
    """Explicit Euler (the paper's training choice)."""
    return x + dt * xd, xd + dt * accel(x, xd)


def rk4(accel: Accel, x, xd, dt):
    """Classical fourth-order Runge–Kutta on (x, ẋ)."""
    def f(s):
        return s[1], accel(*s)
    k1 = f((x, xd))
    k2 = f((x + 0.5 * dt * k1[0], xd + 0.5 * dt * k1[1]))
    k3 = f((x + 0.5 * dt * k2[0], xd + 0.5 * dt * k2[1]))
    k4 = f((x + dt * k3[0], xd + dt * k3[1]))
    return (x + dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]),
            xd + dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1]))


def dopri(accel: Accel, x, xd, dt, rtol: float = 1e-4, atol: float = 1e-6):
    """Adaptive Dopri5 (diffrax) over one interval of length dt."""
    import diffrax

    term = diffrax.ODETerm(lambda t, s, args: (s[1], accel(s[0], s[1])))
    sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), 0.0, dt, dt / 4, (x, xd),
                              stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                              max_steps=256)
    return sol.ys[0][-1], sol.ys[1][-1]


STEPPERS = {"euler": euler, "rk4": rk4, "dopri": dopri}


def get_stepper(solver: str):
    if solver not in STEPPERS:
        raise ValueError(f"unknown solver {solver!r}; allowed: {', '.join(SOLVERS)}")
    return STEPPERS[solver]


def rollout(accel: Accel, x, xd, dt: float, num_steps: int, solver: str = "euler", substeps: int = 1):
    """Integrate ``num_steps`` steps of length dt (each split into ``substeps``).

    Returns positions and velocities (num_steps, 2K) after each step (the start excluded).
    """
    step = get_stepper(solver)
    h = dt / substeps

    def body(carry, _):
        s = carry
        for _ in range(substeps):
            s = step(accel, s[0], s[1], h)
        return s, s

    _, (xs, xds) = jax.lax.scan(body, (x, xd), None, length=num_steps)
    return xs, xds


def rollout_actions(accel_u: Callable, x, xd, us, dt: float, solver: str = "euler", substeps: int = 1):
    """``rollout`` with one action per step: ``accel_u(x, ẋ, u)``, us (num_steps, A), action
    ``us[k]`` held over step k. Returns positions and velocities (num_steps, 2K)."""
    step = get_stepper(solver)
    h = dt / substeps

    def body(s, u):
        accel = lambda a, b: accel_u(a, b, u)
        for _ in range(substeps):
            s = step(accel, s[0], s[1], h)
        return s, s

    _, (xs, xds) = jax.lax.scan(body, (x, xd), us)
    return xs, xds
