"""Energy-based swing-up: energy pumping far from the goal, an LQR (or PD) catch near it.

One law for every system, fed either by a trained KeyCLD model in keypoint coordinates
(``LearnedModel``: learned V, M, B and the known constraint Jacobian) or by the simulator's
true model in joint coordinates (``TrueModel``: MuJoCo's mass matrix, gravity and actuation).

**Pumping.** With the energy E(s) = ½ vᵀ M v + V and its rate Ė = g(s)·u + (terms without u),
the law u = clip(k_E (E* − E) g(s), −1, 1) never removes energy while E < E* and never adds any
while E > E* (each clipped component keeps the sign of (E* − E) g). For a Lagrangian model with
tangent velocities g = Bᵀẋ (the constraint forces do no work). E* is the energy of the goal at
rest, E(x*, 0) = V(x*). The cartpole pumps the energy in the cart's frame (the cart's own
velocity removed; Åström–Furuta), so pushing the cart along does not count as progress: this is
what lets the underactuated cartpole (pole torque 0) swing up through the cart alone.

**Catch.** An infinite-horizon LQR on the model linearised at the goal (``jax.jacfwd`` for the
learned model, finite differences of MuJoCo's accelerations for the true one) in minimal local
coordinates: [Tᵀ(x − x*), Tᵀẋ] with T an orthonormal basis of the constraint tangent space at
x* (learned) or [q − q*, q̇] with wrapped angles (true). ``catch="pd"`` uses instead the
potential shaping with damping injection u = B⁺(∇V(x) − K_p (x − x*) − K_d ẋ).

**Switching rule.** The catch takes over when its own action is inside the Box with margin,
‖u_catch‖∞ ≤ ``switch`` (default 1: the linear law would not saturate, a cheap estimate of its
region of attraction), and hands back to pumping when ‖u_catch‖∞ > ``release`` (default 3).
For a learned model both also need x inside the local chart of the goal (``in_chart``).

Actions are in the env's units ([-1, 1], ×2 to the datasets' range); ``underactuated=True``
holds every actuator but the first (the cartpole's pole torque) at zero.

**The underactuated cartpole from pixels** (``UNDERACTUATED_GAINS``) needs four things the other
systems do not:
half-force pumping (``pump_limit``), or the cart leaves the camera's view and the encoder loses
it; an ``energy_margin``, because the learned kinetic energy at speed is too low and the pole
would arrive over the top too fast to catch; a model-based observer (``agents.observer``),
because the backward-difference velocities of jittering keypoints swamp an LQR that needs ~300
action units per image unit of tilt; and a cart weight in the catch (``q_base``) with a wide
switch, so the saturated LQR takes the pole as soon as it is slow near the top and walks the cart
back within the last second's ±0.25 m.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from keycld.model import constraints as C
from keycld.tasks import TASK_SPECS, check_environment
from keycld_gym import functional as F

CATCHES = ("lqr", "pd")
# The actuated "base" whose frame the energy is pumped in: cartpole's cart (keypoint 0, joint 0).
BASE_FRAME = {"pendulum": False, "cartpole": True, "acrobot": False}
GOAL_QPOS = {"pendulum": (0.0,), "cartpole": (0.0, 0.0), "acrobot": (0.0, 0.0)}  # upright
# Chains whose second actuator bends an elbow (pumping may hold it straight: Gains.elbow_p).
HAS_ELBOW = {"pendulum": False, "cartpole": False, "acrobot": True}


def frame_velocity(system: str, xd: jnp.ndarray) -> jnp.ndarray:
    """Keypoint velocities (2K,) seen from the actuated base's frame (cartpole: the cart's
    velocity subtracted from every keypoint, the cart's own set to 0); unchanged without a base.
    The pumped energy is the model's energy at these velocities: pushing the cart alone adds none."""
    if not BASE_FRAME[system]:
        return xd
    return jnp.concatenate([jnp.zeros(2), xd[2:] - jnp.tile(xd[0:2], (xd.shape[0] - 2) // 2)])


def frame_energy(params, x: jnp.ndarray, xd: jnp.ndarray) -> jnp.ndarray:
    """A trained model's learned energy E(x, ẋ) with the velocities seen from the actuated base's
    frame (``frame_velocity``): the energy the law pumps and the planners' terminal term reads.

    params: ``keycld_gym.functional.EnvParams`` of a Lagrangian model; x, ẋ (2K,)."""
    system = params.model.environment
    return params.model.dynamics.energy(params.weights["dynamics"], x, frame_velocity(system, xd))


def wrap_angle(a):
    """Angles (rad) wrapped into [−π, π)."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def elbow_angle(link1: jnp.ndarray, link2: jnp.ndarray) -> jnp.ndarray:
    """Signed angle (rad) from link1 (2,) to link2 (2,); 0 when the chain is straight."""
    return jnp.arctan2(link1[0] * link2[1] - link1[1] * link2[0], jnp.dot(link1, link2))


@dataclasses.dataclass(frozen=True)
class Gains:
    """Gains of the energy-shaping law (action units [-1, 1]).

    k_energy: pumping gain on (E* − E) g (large = bang-bang pumping).
    catch: "lqr" or "pd". q_pos, q_vel, r: LQR weights Q = diag(q_pos·I, q_vel·I), R = r·I in
    the model's local coordinates (image units for a learned model, rad and m for the true one).
    q_base: extra LQR weight on the actuated base's horizontal offset (the cart; 0 for systems
    without a base). The upright pole needs a gain two orders larger than the cart's, so with
    q_base = 0 a small bias of the pole's measured tilt moves the balanced cart far off-centre
    (offset = bias × pole gain / cart gain); q_base raises the cart's share.
    kp, kd: PD gains (model coordinates). switch, release: the switching rule's levels.
    center_p, center_d: while pumping, the actuated base (the cart) is also pushed back to the
    centre, u_base −= center_p·p + center_d·ṗ (0 for systems without a base).
    base_clip: the catch sees the base's offset from the goal clipped to ±base_clip (model
    units), as if the goal moved along the rail towards the base: a pole caught far from the
    centre is balanced first and walked back, instead of the large offset saturating the catch.
    elbow_p, elbow_d: while pumping, a chain's second actuator holds the elbow straight: the
    actuators' share of φ̈ is set to −elbow_p·φ − elbow_d·φ̇ (φ the elbow angle, rad; off for
    systems without an elbow or with elbow_p = 0), so the pumped chain swings like one rigid
    pendulum and reaches the top on the pendulum's homoclinic orbit instead of wandering over the
    whole energy surface.
    pump_limit: the pumping term's bound (action units, before the centring and elbow terms;
    default inf: the final clip to the Box is the only one): pumping at
    half force swings the cartpole up over several swings with the cart within ±0.6 m instead
    of one full-force push that carries it 2.6–3.8 m out, beyond the camera's ±2.2 m.
    energy_margin: pumping aims at E* − energy_margin (model units). A learned model whose
    kinetic energy at speed is too low (the cartpole's reads about 60% of the true one at the
    bottom of a swing) keeps pumping past the goal; the margin stops it at the true goal energy.
    observer_alpha, observer_beta: a learned model's state comes from an
    ``agents.observer.KeypointObserver`` with these gains instead of straight from the
    observation (0: off; ignored by the true model, which reads the simulator).
    """

    k_energy: float = 100.0
    catch: str = "lqr"
    q_pos: float = 10.0
    q_vel: float = 1.0
    r: float = 1.0
    q_base: float = 0.0
    kp: float = 10.0
    kd: float = 1.0
    switch: float = 1.0
    release: float = 3.0
    center_p: float = 0.0
    center_d: float = 0.0
    base_clip: float = float("inf")
    elbow_p: float = 0.0
    elbow_d: float = 0.0
    pump_limit: float = float("inf")
    energy_margin: float = 0.0
    observer_alpha: float = 0.0
    observer_beta: float = 0.0

    def __post_init__(self):
        if self.catch not in CATCHES:
            raise ValueError(f"unknown catch {self.catch!r}; allowed: {', '.join(CATCHES)}")
        for name in ("k_energy", "q_pos", "q_vel", "r", "switch", "release"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"gain {name} must be a finite number > 0, got {v!r}")
        for name in ("q_base", "kp", "kd", "center_p", "center_d", "elbow_p", "elbow_d"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"gain {name} must be a finite number >= 0, got {v!r}")
        if self.observer_alpha > 0:
            from .observer import check_gains
            check_gains(self.observer_alpha, self.observer_beta)
        elif self.observer_alpha != 0 or self.observer_beta != 0:  # negative or NaN, or beta alone
            raise ValueError(f"observer_alpha must be 0 (observer off) or in (0, 1], and observer_beta needs "
                             f"observer_alpha > 0; got alpha={self.observer_alpha!r}, beta={self.observer_beta!r}")
        if not np.isfinite(self.energy_margin):
            raise ValueError(f"gain energy_margin must be finite, got {self.energy_margin!r}")
        if not self.pump_limit > 0:
            raise ValueError(f"gain pump_limit must be > 0 (inf: no bound), got {self.pump_limit!r}")
        if not self.base_clip > 0:
            raise ValueError(f"gain base_clip must be > 0 (inf: no clipping), got {self.base_clip!r}")
        if self.release < self.switch:
            raise ValueError(f"release ({self.release}) must be >= switch ({self.switch})")


# Defaults per (model kind, system); the learned models' coordinates are image units
# (1 unit = half the image), the true model's radians and metres.
DEFAULT_GAINS: dict[tuple[str, str], Gains] = {
    ("true", "pendulum"): Gains(q_pos=10.0, q_vel=1.0, r=1.0, kp=3.0, kd=0.5),
    ("true", "cartpole"): Gains(q_pos=10.0, q_vel=1.0, r=1.0, kp=3.0, kd=0.5, center_p=0.3, center_d=0.5),
    ("true", "acrobot"): Gains(q_pos=10.0, q_vel=1.0, r=3.0, kp=10.0, kd=2.0, elbow_p=100.0, elbow_d=20.0,
                               switch=4.0, release=8.0),
    ("learned", "pendulum"): Gains(q_pos=100.0, q_vel=1.0, r=1.0, kp=10.0, kd=1.0),
    ("learned", "cartpole"): Gains(q_pos=100.0, q_vel=1.0, r=1.0, kp=10.0, kd=1.0, center_p=0.75, center_d=1.25,
                                   base_clip=0.4, switch=4.0, release=8.0),
    ("learned", "acrobot"): Gains(q_pos=300.0, q_vel=3.0, r=1.0, kp=30.0, kd=3.0, elbow_p=100.0, elbow_d=20.0,
                                  switch=4.0, release=8.0),
}
# The underactuated cartpole from pixels (the pole torque held at 0): half-force pumping with a
# light centring term keeps the cart in view; the energy margin and the observer correct the
# learned model's low kinetic energy and the encoder's jitter; the catch weighs the cart's offset
# and, at these gains, acts (saturated) from ‖u‖∞ ≤ 30, which is where the pole is slow
# near the top. Systems not listed use DEFAULT_GAINS.
UNDERACTUATED_GAINS: dict[tuple[str, str], Gains] = {
    ("learned", "cartpole"): Gains(q_pos=100.0, q_vel=10.0, r=1.0, q_base=3000.0, kp=10.0, kd=1.0,
                                   center_p=1.2, center_d=0.5, base_clip=0.4, switch=30.0, release=60.0,
                                   pump_limit=0.5, energy_margin=0.4, observer_alpha=0.4, observer_beta=0.08),
}


def default_gains(kind: str, system: str, underactuated: bool = False) -> Gains:
    """The documented defaults of a model kind ("learned", "true") on ``system``."""
    if underactuated and (kind, system) in UNDERACTUATED_GAINS:
        return UNDERACTUATED_GAINS[(kind, system)]
    return DEFAULT_GAINS[(kind, system)]


def lqr_gain(a: np.ndarray, b: np.ndarray, q_pos: float, q_vel: float, r: float,
             q_base: float = 0.0, base_row: np.ndarray | None = None) -> np.ndarray:
    """Continuous-time LQR gain K (A_u, 2n) for ė = a e + b u, e = [positions (n), velocities (n)].

    Q = diag(q_pos·I + q_base·ccᵀ, q_vel·I), R = r·I, with c (n,) = ``base_row`` the base's
    horizontal offset as a function of the local positions (no extra term without a base)."""
    n = a.shape[0] // 2
    q = np.diag(np.r_[np.full(n, q_pos), np.full(n, q_vel)])
    if base_row is not None and q_base > 0:
        q[:n, :n] += q_base * np.outer(base_row, base_row)
    rr = r * np.eye(b.shape[1])
    try:
        p = scipy.linalg.solve_continuous_are(a, b, q, rr)
    except (np.linalg.LinAlgError, ValueError) as err:
        raise ValueError(f"the model linearised at the goal is not stabilisable with these actuators "
                         f"({err}); use catch='pd'") from err
    return np.linalg.solve(rr, b.T @ p)


# ---------------------------------------------------------------------------------------------
# Models: the quantities the law needs, in the model's own coordinates.
# ---------------------------------------------------------------------------------------------
class LearnedModel:
    """A trained KeyCLD model's E, ∂Ė/∂u, ∇V, B and goal linearisation in keypoint coordinates.

    Args:
        params: ``keycld_gym.functional.EnvParams`` (weights, model, action scale).
        x_goal: (2K,) keypoints of the upright pose (``goal_keypoints``).
    """

    kind = "learned"

    def __init__(self, params, x_goal: np.ndarray):
        self.system = params.model.environment
        self.params = params
        dyn, w, scale = params.model.dynamics, params.weights["dynamics"], float(params.action_scale)
        if not dyn.lagrangian:
            raise ValueError(f"energy shaping needs a Lagrangian model, not {dyn.kind!r}")
        self.num_actions = params.model.num_actions

        def energy(x, xd):
            return frame_energy(params, x, xd)

        def accel(x, xd, u):
            return dyn.acceleration(w, x, xd, u * scale)

        def pump(x, xd):
            de = jax.grad(energy, argnums=1)(x, xd)
            return jax.jacfwd(lambda u: de @ accel(x, xd, u))(jnp.zeros(self.num_actions))

        def pd_terms(x):
            return jax.grad(lambda y: dyn.potential(w, y))(x), dyn.input_matrix(w, x) * scale

        def elbow_terms(x, xd):
            angle = lambda y: elbow_angle(y[0:2], y[2:4] - y[0:2])  # noqa: E731
            g = jax.grad(angle)(x)
            gain = g @ jax.jacfwd(lambda u: accel(x, xd, u))(jnp.zeros(self.num_actions))
            return angle(x), g @ xd, gain

        self._energy, self._pump, self._pd = jax.jit(energy), jax.jit(pump), jax.jit(pd_terms)
        self._elbow = jax.jit(elbow_terms) if HAS_ELBOW[self.system] else None
        x_goal = jnp.asarray(x_goal, jnp.float32)
        if dyn.constrained:
            phi = F.manifold(params)
            x_goal = C.project_position(phi, x_goal)
            d = np.asarray(C.jacobian(phi, x_goal))
            self.tangent = scipy.linalg.null_space(d)
        else:
            self.tangent = np.eye(x_goal.shape[0])
        self.x_goal = np.asarray(x_goal)
        self.goal_energy = float(energy(x_goal, jnp.zeros_like(x_goal)))
        t = jnp.asarray(self.tangent, jnp.float32)

        def local_dynamics(e, u):
            n = t.shape[1]
            z, zd = e[:n], e[n:]
            return jnp.concatenate([zd, t.T @ accel(x_goal + t @ z, t @ zd, u)])

        self._local = local_dynamics

    def linearize(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A (2n, 2n), B (2n, A), u_eq (A,)) at the goal; u_eq holds the learned goal at rest."""
        n2 = 2 * self.tangent.shape[1]
        e0, u0 = jnp.zeros(n2), jnp.zeros(self.num_actions)
        b = np.asarray(jax.jacfwd(self._local, argnums=1)(e0, u0))
        drift = np.asarray(self._local(e0, u0))
        u_eq = np.zeros(self.num_actions)
        u_eq[mask] = np.linalg.lstsq(b[n2 // 2:, mask], -drift[n2 // 2:], rcond=None)[0]
        a = np.asarray(jax.jacfwd(self._local, argnums=0)(e0, jnp.asarray(u_eq, jnp.float32)))
        return a, b, u_eq

    def bind(self, env) -> None:
        pass

    def observe(self, obs: np.ndarray, info: dict) -> tuple[np.ndarray, np.ndarray]:
        d = obs.shape[0] // 2
        return obs[:d], obs[d:]

    def energy(self, s) -> float:
        return float(self._energy(*s))

    def pump_direction(self, s) -> np.ndarray:
        return np.asarray(self._pump(*s))

    def offset(self, s, base_clip: float = np.inf) -> np.ndarray:
        """x − x* (2K,), the base's horizontal offset clipped to ±base_clip: every keypoint is
        shifted along the rail by the excess (the model is invariant to that shift)."""
        d = np.asarray(s[0] - self.x_goal, float)
        if BASE_FRAME[self.system] and np.isfinite(base_clip):
            d = d.copy()
            d[0::2] -= d[0] - np.clip(d[0], -base_clip, base_clip)
        return d

    def error(self, s, base_clip: float = np.inf) -> np.ndarray:
        return np.r_[self.tangent.T @ self.offset(s, base_clip), self.tangent.T @ s[1]]

    def in_chart(self, s, base_clip: float = np.inf, max_angle: float = 0.6) -> bool:
        """Whether x is close enough to x* for the tangent coordinates to mean something.

        Far from the goal a linear chart folds (the pendulum's bottom has almost no tangential
        offset from the top), so the catch is allowed only while the offset's component normal
        to the tangent space is at most tan(max_angle / 2) times its tangential component (on a
        circle: within ``max_angle`` rad of the goal).
        """
        d = self.offset(s, base_clip)
        tangential = np.linalg.norm(self.tangent.T @ d)
        normal = np.linalg.norm(d - self.tangent @ (self.tangent.T @ d))
        return bool(normal <= np.tan(max_angle / 2) * tangential + 1e-6)

    def base_row(self) -> np.ndarray | None:
        """(n,) the base keypoint's horizontal offset per local position coordinate, or None."""
        return self.tangent[0] if BASE_FRAME[self.system] else None

    def base(self, s) -> tuple[float, float]:
        """Horizontal position and velocity of the base keypoint relative to the goal."""
        return float(s[0][0] - self.x_goal[0]), float(s[1][0])

    def elbow(self, s) -> tuple[float, float, np.ndarray] | None:
        """(φ rad, φ̇ rad/s, ∂φ̈/∂u (A,)) of the elbow (acrobot: link 2 relative to link 1), else None."""
        if self._elbow is None:
            return None
        p, pd, gain = self._elbow(*s)
        return float(p), float(pd), np.asarray(gain)

    def pd_action(self, s, kp: float, kd: float, mask: np.ndarray) -> np.ndarray:
        grad_v, b = (np.asarray(a) for a in self._pd(s[0]))
        force = grad_v - kp * (s[0] - self.x_goal) - kd * s[1]
        u = np.zeros(self.num_actions)
        u[mask] = np.linalg.lstsq(b[:, mask], force, rcond=None)[0]
        return u


class TrueModel:
    """The simulator's own model (MuJoCo) in joint coordinates: the true-model baseline.

    Reads q, q̇ from the bound env's physics (not from the observation).
    """

    kind = "true"

    def __init__(self, system: str, eps: float = 1e-6):
        import mujoco

        from keycld.tasks import load_task

        self.system = system
        self._mj = mujoco
        physics = load_task(system).physics
        self.model = physics.model.ptr
        self.data = mujoco.MjData(self.model)
        self.nv, self.num_actions = self.model.nv, self.model.nu
        self.scale = TASK_SPECS[system].action_scale
        self.actuation = np.zeros((self.nv, self.num_actions))  # ∂τ/∂u in action units
        for i in range(self.num_actions):
            self.actuation[self.model.actuator_trnid[i, 0], i] = self.model.actuator_gear[i, 0] * self.scale
        self.hinge = self.model.jnt_type == mujoco.mjtJoint.mjJNT_HINGE
        self.q_goal = np.asarray(GOAL_QPOS[system], float)
        self.frame = np.ones(self.nv)
        if BASE_FRAME[system]:
            self.frame[0] = 0.0  # the cart's velocity removed
        self.eps = eps
        self.physics = None
        self.goal_energy = self.energy((self.q_goal, np.zeros(self.nv)))

    def bind(self, env) -> None:
        self.physics = env.physics

    def _forward(self, q, qd, u=None) -> None:
        d = self.data
        d.qpos[:], d.qvel[:] = q, qd
        d.ctrl[:] = 0.0 if u is None else np.asarray(u) * self.scale
        self._mj.mj_forward(self.model, d)

    def _mass(self) -> np.ndarray:
        m = np.zeros((self.nv, self.nv))
        self._mj.mj_fullM(self.model, self.data, m)
        return m

    def observe(self, obs, info) -> tuple[np.ndarray, np.ndarray]:
        return self.physics.data.qpos.copy(), self.physics.data.qvel.copy()

    def energy(self, s) -> float:
        q, qd = s
        self._forward(q, qd)
        v = -float(np.sum(self.model.body_mass[:, None] * self.data.xipos * self.model.opt.gravity))
        w = self.frame * qd
        return 0.5 * float(w @ self._mass() @ w) + v

    def pump_direction(self, s) -> np.ndarray:
        q, qd = s
        self._forward(q, qd)
        m = self._mass()
        w = self.frame * qd
        return self.actuation.T @ np.linalg.solve(m, self.frame * (m @ w))

    def error(self, s, base_clip: float = np.inf) -> np.ndarray:
        """[q − q*, q̇] with wrapped angles; the base joint's offset clipped to ±base_clip."""
        dq = s[0] - self.q_goal
        dq = np.where(self.hinge, wrap_angle(dq), dq)
        if BASE_FRAME[self.system]:
            dq[0] = np.clip(dq[0], -base_clip, base_clip)
        return np.r_[dq, s[1]]

    def in_chart(self, s, base_clip: float = np.inf) -> bool:
        """Joint coordinates with wrapped angles cover the whole configuration space."""
        return True

    def base_row(self) -> np.ndarray | None:
        """(nv,) the base joint's offset per joint coordinate (the slider: e₀), or None."""
        return np.eye(self.nv)[0] if BASE_FRAME[self.system] else None

    def base(self, s) -> tuple[float, float]:
        """Position and velocity of the base joint (the cart's slider) relative to the goal."""
        return float(s[0][0] - self.q_goal[0]), float(s[1][0])

    def elbow(self, s) -> tuple[float, float, np.ndarray] | None:
        """(φ rad, φ̇ rad/s, ∂φ̈/∂u (A,)) of the elbow joint (acrobot), else None."""
        if not HAS_ELBOW[self.system]:
            return None
        q, qd = s
        self._forward(q, qd)
        gain = np.linalg.solve(self._mass(), self.actuation)[1]
        return float(wrap_angle(q[1])), float(qd[1]), gain

    def _qacc(self, q, qd, u) -> np.ndarray:
        self._forward(q, qd, u)
        return self.data.qacc.copy()

    def linearize(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, e = self.nv, self.eps
        q0, v0, u0 = self.q_goal, np.zeros(n), np.zeros(self.num_actions)
        a = np.zeros((2 * n, 2 * n))
        a[:n, n:] = np.eye(n)
        for j in range(n):
            dj = np.eye(n)[j] * e
            a[n:, j] = (self._qacc(q0 + dj, v0, u0) - self._qacc(q0 - dj, v0, u0)) / (2 * e)
            a[n:, n + j] = (self._qacc(q0, v0 + dj, u0) - self._qacc(q0, v0 - dj, u0)) / (2 * e)
        b = np.zeros((2 * n, self.num_actions))
        for i in range(self.num_actions):
            di = np.eye(self.num_actions)[i] * e
            b[n:, i] = (self._qacc(q0, v0, u0 + di) - self._qacc(q0, v0, u0 - di)) / (2 * e)
        return a, b, u0

    def pd_action(self, s, kp: float, kd: float, mask: np.ndarray) -> np.ndarray:
        q, qd = s
        self._forward(q, np.zeros(self.nv))
        gravity = self.data.qfrc_bias.copy()  # the torque that holds q at rest
        err = self.error(s)
        force = gravity - kp * err[:self.nv] - kd * qd
        u = np.zeros(self.num_actions)
        u[mask] = np.linalg.lstsq(self.actuation[:, mask], force, rcond=None)[0]
        return u


# ---------------------------------------------------------------------------------------------
# The controller
# ---------------------------------------------------------------------------------------------
class EnergyShapingController:
    """Energy pumping + LQR/PD catch on a ``LearnedModel`` or ``TrueModel`` (an ``agents.base.Agent``).

    ``last_mode`` is "pump" or "catch" after each ``act``.
    """

    def __init__(self, model, gains: Gains | None = None, underactuated: bool = False):
        if underactuated and model.system != "cartpole":
            raise ValueError(f"underactuated is defined for the cartpole only, not {model.system!r}")
        self.model = model
        self.gains = gains or default_gains(model.kind, model.system, underactuated)
        self.observer = None
        if self.gains.observer_alpha > 0 and model.kind == "learned":
            from .observer import KeypointObserver
            self.observer = KeypointObserver(model.params, self.gains.observer_alpha, self.gains.observer_beta)
        self.last_action = np.zeros(model.num_actions, np.float32)
        self._fresh = True  # the next state() starts the observer from its measurement
        self.mask = np.ones(model.num_actions, bool)
        if underactuated:
            self.mask[1:] = False
        self.underactuated = underactuated
        a, b, self.u_eq = model.linearize(self.mask)
        self.k_lqr = np.zeros((model.num_actions, a.shape[0]))
        if self.gains.catch == "lqr":
            g = self.gains
            self.k_lqr[self.mask] = lqr_gain(a, b[:, self.mask], g.q_pos, g.q_vel, g.r, g.q_base, model.base_row())
        self.caught = False
        self.last_mode = "pump"

    def reset(self, env, obs: np.ndarray, info: dict[str, Any]) -> None:
        self.model.bind(env)
        self.caught = False
        self.last_action = np.zeros(self.model.num_actions, np.float32)
        self._fresh = True  # the first act sees the reset's observation: nothing to predict yet

    def state(self, obs: np.ndarray, info: dict[str, Any]):
        """The model's state from an observation, through the observer when there is one."""
        s = self.model.observe(obs, info)
        if self.observer is None:
            return s
        if self._fresh:
            self._fresh = False
            return self.observer.reset(*s)
        return self.observer.update(s[0], self.last_action)

    def catch_action(self, s) -> np.ndarray:
        g = self.gains
        if g.catch == "lqr":
            return self.u_eq - self.k_lqr @ self.model.error(s, g.base_clip)
        return self.model.pd_action(s, g.kp, g.kd, self.mask)

    def pump_action(self, s) -> np.ndarray:
        de = self.model.goal_energy - self.gains.energy_margin - self.model.energy(s)
        g = self.model.pump_direction(s) * self.mask
        if np.max(np.abs(g)) < 1e-9:  # at rest: any push starts the swing
            u = self.mask.astype(float)
        else:
            u = np.clip(self.gains.k_energy * de * g, -self.gains.pump_limit, self.gains.pump_limit)
        elbow = self.model.elbow(s) if self.gains.elbow_p > 0 and self.mask[1:].any() else None
        if elbow is not None and abs(elbow[2][1]) > 1e-9:
            # the actuators' share of φ̈ becomes −elbow_p φ − elbow_d φ̇, given the first one's push
            p, pd, gain = elbow
            u0 = float(np.clip(u[0], -1.0, 1.0))
            u[1] = (-self.gains.elbow_p * p - self.gains.elbow_d * pd - gain[0] * u0) / gain[1]
        if BASE_FRAME[self.model.system]:
            p, v = self.model.base(s)
            u[0] -= self.gains.center_p * p + self.gains.center_d * v
        return u

    def try_catch(self, s) -> np.ndarray | None:
        """The catch action (A,) if the switching rule hands ``s`` to the catch, else None.

        Updates the hysteresis (``caught``); unclipped, unmasked."""
        u_catch = self.catch_action(s)
        level = float(np.max(np.abs(u_catch))) if self.model.in_chart(s, self.gains.base_clip) else np.inf
        self.caught = level <= self.gains.release if self.caught else level <= self.gains.switch
        return u_catch if self.caught else None

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        s = self.state(obs, info)
        u = self.try_catch(s)
        if u is None:
            u = self.pump_action(s)
        self.last_mode = "catch" if self.caught else "pump"
        self.last_action = np.clip(u * self.mask, -1.0, 1.0).astype(np.float32)
        return self.last_action.copy()


# ---------------------------------------------------------------------------------------------
# Construction helpers
# ---------------------------------------------------------------------------------------------
def goal_keypoints(system: str, params) -> np.ndarray:
    """x* (2K,): the encoder's keypoints of the upright pose rendered by the real simulation,
    on the params' constraint manifold."""
    from keycld_gym.loading import pose_keypoints

    check_environment(system)
    return pose_keypoints(system, params, GOAL_QPOS[system])


def learned_controller(system: str, checkpoint=None, gains: Gains | None = None,
                       underactuated: bool = False) -> EnergyShapingController:
    """The law on a trained model (default: the shipped model of ``system``)."""
    from keycld_gym.loading import load_model_params

    params = load_model_params(system, checkpoint)
    x_goal = goal_keypoints(system, params)
    return EnergyShapingController(LearnedModel(params, x_goal), gains, underactuated)


def true_controller(system: str, gains: Gains | None = None, underactuated: bool = False) -> EnergyShapingController:
    """The law on the simulator's true model (``--agent energy-true``)."""
    check_environment(system)
    return EnergyShapingController(TrueModel(system), gains, underactuated)
