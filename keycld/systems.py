"""The paper's three systems as built-in :class:`keycld.System` instances.

Constraints Φ(x) = 0 in keypoint image coordinates (lengths in image units, for the paper's
camera placement only; keypoint order is learned, the constraints decide which keypoint is
which, e.g. cartpole keypoint 1 = cart) and dm_control's swing-up rewards computed from
keypoints through the known geometry.

The constraints pin which keypoint is which (pendulum: the bob; cartpole: 1 = cart, 2 = pole;
acrobot: 1 = upper arm, 2 = lower arm), so link directions, the cart position and angular
velocities follow from the keypoints alone. Image units convert to metres with the paper's
camera: half the image height spans ``distance · tan(fovy / 2)`` metres (fovy = 45°).

Rewards are pure JAX: ``reward(x (2K,), ẋ (2K,), ctrl (A,)) -> scalar``, where ctrl is the raw
MuJoCo control (dataset units, ±2) as dm_control's reward sees it.

``get(name)`` returns a built-in System; ``BUILTIN`` maps names to them.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from keycld.system import System
from keycld.tasks import TASK_SPECS

FOVY_DEG = 45.0
CAMERA_DISTANCE = {"pendulum": 2.5, "cartpole": 6.0, "acrobot": 6.0}  # metres to the motion plane
METRES_PER_UNIT = {k: d * math.tan(math.radians(FOVY_DEG / 2)) for k, d in CAMERA_DISTANCE.items()}
PENDULUM_COSINE_BOUND = math.cos(math.radians(8.0))
ACROBOT_TARGET = (0.0, 4.0 - 2.1)  # target site relative to the shoulder (paper's model), metres
ACROBOT_TARGET_RADIUS = 0.2
ACROBOT_LINK = 1.0  # metres, both links


def tolerance(x, lower: float = 0.0, upper: float = 0.0, margin: float = 0.0,
              sigmoid: str = "gaussian", value_at_margin: float = 0.1):
    """``dm_control.utils.rewards.tolerance`` for the gaussian and quadratic sigmoids."""
    in_bounds = (lower <= x) & (x <= upper)
    if margin == 0:
        return jnp.where(in_bounds, 1.0, 0.0)
    d = jnp.where(x < lower, lower - x, x - upper) / margin
    if sigmoid == "gaussian":
        scale = math.sqrt(-2 * math.log(value_at_margin))
        value = jnp.exp(-0.5 * (d * scale) ** 2)
    elif sigmoid == "quadratic":
        scaled = d * math.sqrt(1 - value_at_margin)
        value = jnp.where(jnp.abs(scaled) < 1, 1 - scaled ** 2, 0.0)
    else:
        raise ValueError(f"unsupported sigmoid {sigmoid!r}; allowed: gaussian, quadratic")
    return jnp.where(in_bounds, 1.0, value)


def _unit(v):
    return v / jnp.sqrt(jnp.sum(v * v) + 1e-12)


def _angular_velocity(d, dd):
    """Angular velocity (rad/s) of the vector d (2,) moving at dd (2,)."""
    return (d[0] * dd[1] - d[1] * dd[0]) / (jnp.sum(d * d) + 1e-12)


def pendulum_quantities(x, xd):
    """cos of the pole angle (1 = upright) and its angular velocity."""
    return _unit(x[0:2])[1], _angular_velocity(x[0:2], xd[0:2])


def pendulum_reward(x, xd, ctrl):
    """Sparse: 1 within 8° of upright (dm_control pendulum swingup)."""
    cos, _ = pendulum_quantities(x, xd)
    return tolerance(cos, PENDULUM_COSINE_BOUND, 1.0)


def cartpole_quantities(x, xd):
    """Cart position (m), pole cosine (1 = upright) and pole angular velocity (rad/s)."""
    pole = x[2:4] - x[0:2]
    return (x[0] * METRES_PER_UNIT["cartpole"], _unit(pole)[1],
            _angular_velocity(pole, xd[2:4] - xd[0:2]))


def cartpole_reward(x, xd, ctrl):
    """Smooth swing-up reward (dm_control cartpole swingup, sparse=False)."""
    cart, cos, omega = cartpole_quantities(x, xd)
    upright = (cos + 1) / 2
    centered = (1 + tolerance(cart, margin=2.0)) / 2
    small_control = (4 + tolerance(ctrl[0], margin=1.0, value_at_margin=0.0, sigmoid="quadratic")) / 5
    small_velocity = (1 + tolerance(omega, margin=5.0)) / 2
    return upright * small_control * small_velocity * centered


def acrobot_tip(x):
    """Tip position (m) relative to the shoulder, from the two link directions."""
    return ACROBOT_LINK * (_unit(x[0:2]) + _unit(x[2:4] - x[0:2]))


def acrobot_reward(x, xd, ctrl):
    """Smooth reward: tip within 0.2 m of the target, gaussian margin 1 (dm_control acrobot swingup)."""
    dist = jnp.sqrt(jnp.sum((acrobot_tip(x) - jnp.asarray(ACROBOT_TARGET)) ** 2))
    return tolerance(dist, 0.0, ACROBOT_TARGET_RADIUS, margin=1.0)




# ---- constraints ------------------------------------------------------------------------------
def _norm(v):
    # sqrt with a safe gradient at 0 (random initial keypoints can be anywhere)
    return jnp.sqrt(jnp.sum(v * v) + 1e-12)


def pendulum_constraint(x):
    """(2,) -> (1,): the bob stays on a circle of radius 0.5 about the image centre."""
    return jnp.array([_norm(x[0:2]) - 0.5])


def cartpole_constraint(x):
    """(4,) -> (2,): cart on the rail (y₁ = 0); pole length ‖p₁ − p₂‖ = 0.5."""
    return jnp.array([x[1], _norm(x[0:2] - x[2:4]) - 0.5])


def acrobot_constraint(x):
    """(4,) -> (2,): ‖p₁‖ = 0.3 (upper arm about the centre), ‖p₁ − p₂‖ = 0.3 (lower arm)."""
    return jnp.array([_norm(x[0:2]) - 0.3, _norm(x[0:2] - x[2:4]) - 0.3])


# ---- the built-in systems -----------------------------------------------------------------------
def _builtin(name: str, constraint, reward, description: str) -> System:
    spec = TASK_SPECS[name]
    return System(name=name, num_keypoints=spec.num_keypoints, action_dim=spec.num_actions, dt=spec.dt,
                  constraint=constraint, reward=reward, action_scale=spec.action_scale,
                  description=description)


PENDULUM = _builtin("pendulum", pendulum_constraint, pendulum_reward,
                    "dm_control pendulum swing-up with the paper's edits; keypoint 1 = bob")
CARTPOLE = _builtin("cartpole", cartpole_constraint, cartpole_reward,
                    "dm_control cartpole swing-up with the paper's edits; keypoint 1 = cart, 2 = pole")
ACROBOT = _builtin("acrobot", acrobot_constraint, acrobot_reward,
                   "dm_control acrobot swing-up with the paper's edits; keypoint 1 = upper arm, 2 = lower arm")
BUILTIN: dict[str, System] = {s.name: s for s in (PENDULUM, CARTPOLE, ACROBOT)}


def get(name: str) -> System:
    """The built-in System called ``name``; ValueError naming the allowed names otherwise."""
    if name not in BUILTIN:
        raise ValueError(f"unknown system {name!r}; built-in: {', '.join(BUILTIN)} "
                         "(your own: a System in a Python file, `--system FILE.py[:NAME]`)")
    return BUILTIN[name]


__all__ = ["BUILTIN", "get", "PENDULUM", "CARTPOLE", "ACROBOT"]
