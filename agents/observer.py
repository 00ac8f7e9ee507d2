"""A model-based α–β observer for keypoint states measured from pixels.

On the real system the encoder's keypoints jitter by a fraction of a pixel from frame to frame,
and the env's backward difference (``KeyCLD-*-Real-v0``, ``obs_type="keypoints"``) turns that
into velocity noise of the order of 0.5 image units/s at the cartpole's dt = 0.01 s — enough to
swamp a controller whose gains are large (the LQR that balances the underactuated cartpole's
pole needs about 300 action units per image unit of tilt).

The observer predicts one control step with the learned dynamics (``keycld_gym.functional.step``,
the learned env's integrator) under the action actually applied, and corrects the prediction
with the measured positions only::

    x⁻, ẋ⁻ = step(x̂, ẋ̂, u)        r = x_meas − x⁻
    x̂ = x⁻ + α r                   ẋ̂ = ẋ⁻ + (β / dt) r          (then projected onto Φ(x) = c)

α, β are the steady-state gains of an α–β (constant-gain Kalman) filter: α = 1, β = 1 trusts the
measurement alone; small values trust the model. With the learned dynamics as the predictor
the estimate does not lag when the controller accelerates the system, which a constant-velocity
α–β filter does (on the underactuated cartpole that lag loses the cart). Jitted; one call per
control step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from keycld_gym import functional as F


def check_gains(alpha: float, beta: float) -> None:
    """Raise ValueError unless 0 < α ≤ 1 and 0 ≤ β ≤ 2 (the α–β filter's stable range)."""
    if not (np.isfinite(alpha) and 0.0 < alpha <= 1.0):
        raise ValueError(f"observer alpha must be in (0, 1], got {alpha!r}")
    if not (np.isfinite(beta) and 0.0 <= beta <= 2.0):
        raise ValueError(f"observer beta must be in [0, 2], got {beta!r}")


class KeypointObserver:
    """α–β observer of the keypoint state [x, ẋ] with a learned model as predictor.

    Args:
        params: ``keycld_gym.functional.EnvParams`` of the model that predicts.
        alpha, beta: correction gains on position and velocity (see the module docstring).
    """

    def __init__(self, params: F.EnvParams, alpha: float, beta: float):
        check_gains(alpha, beta)
        self.alpha, self.beta = float(alpha), float(beta)
        dt = float(params.model.dt)

        def update(x, xd, u, x_meas):
            pred, *_ = F.step(F.EnvState(x, xd, jnp.zeros((), jnp.int32)), u, params)
            r = x_meas - pred.x
            return F.project(pred.x + self.alpha * r, pred.xd + (self.beta / dt) * r, params)

        self._update = jax.jit(update)
        self.state: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self, x: np.ndarray, xd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start from a measured state x (2K,), ẋ (2K,); returns it."""
        self.state = (np.asarray(x, np.float32), np.asarray(xd, np.float32))
        return self.state

    def update(self, x_meas: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The estimate (x̂, ẋ̂) after ``action`` (A,) in [-1, 1] was applied for one control step
        and the positions x_meas (2K,) were measured."""
        if self.state is None:
            raise RuntimeError("call reset() before update()")
        x, xd = self._update(*self.state, jnp.asarray(action, jnp.float32), jnp.asarray(x_meas, jnp.float32))
        self.state = (np.asarray(x), np.asarray(xd))
        return self.state
