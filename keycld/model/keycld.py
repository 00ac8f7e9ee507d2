"""The KeyCLD model: keypoint encoder + learned dynamics + renderer, as pure functions of params.

Params are a dict ``{"encoder", "renderer", "dynamics"}`` of Flax variable trees. Images are
float32 in [0, 1], (N, 64, 64, 3); keypoints (N, 2K) in image units; actions in dataset units.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from keycld.model import networks, onednn
from keycld.model.dynamics import Dynamics
from keycld.model.integrators import rollout, rollout_actions
from keycld.model.keypoints import augment, central_differences, spatial_softmax, unaugment
from keycld.system import System


@dataclasses.dataclass(frozen=True)
class KeyCLD:
    """Static description of a model; every method is a pure function of ``params``.

    ``system`` is a :class:`keycld.System` (a built-in system's name is accepted too).
    """

    system: System
    model: str = "keycld"  # keycld | no_constraint | node2 | fc
    hidden: int = 32
    sigma: float = 0.1
    solver: str = "euler"
    fast_convs: bool = True  # False: the plain networks (same function; benchmarks, forward-mode autodiff)
    # the networks' convolutions: "xla", or "onednn" (CPU, PyTorch installed; keycld.model.onednn;
    # training resolves "auto" with onednn.resolve). Same function, reverse-mode only.
    conv_backend: str = "xla"

    def __post_init__(self):
        if isinstance(self.system, str):
            from keycld import systems
            object.__setattr__(self, "system", systems.get(self.system))
        if not isinstance(self.system, System):
            raise TypeError(f"system must be a keycld.System, got {type(self.system).__name__}")
        if self.conv_backend not in onednn.COMPUTE_BACKENDS:
            raise ValueError(f"conv_backend {self.conv_backend!r} is not one of {', '.join(onednn.COMPUTE_BACKENDS)} "
                             "(keycld.model.onednn.resolve turns 'auto' into one of them)")
        if self.conv_backend == "onednn" and not self.fast_convs:
            raise ValueError("conv_backend 'onednn' computes the fast networks' function: it needs fast_convs=True")

    @classmethod
    def from_config(cls, cfg, system: System | None = None) -> "KeyCLD":
        """The model a TrainConfig describes; ``system`` defaults to the built-in one named
        ``cfg.environment`` (a user System comes from its run directory, ``keycld.rundir``)."""
        return cls(system if system is not None else cfg.environment, cfg.model, cfg.num_hidden_dim,
                   cfg.sigma, cfg.solver)

    # ---- static facts -----------------------------------------------------------------------
    @property
    def environment(self) -> str:
        """The system's name."""
        return self.system.name

    @property
    def num_keypoints(self) -> int:
        return self.system.num_keypoints

    @property
    def num_actions(self) -> int:
        return self.system.action_dim

    @property
    def dt(self) -> float:
        return self.system.dt

    @property
    def heatmaps(self) -> bool:
        return self.model != "fc"

    @property
    def dynamics(self) -> Dynamics:
        kind = "keycld" if self.model == "fc" else self.model
        return Dynamics(self.system, kind, self.hidden)

    def _encoder(self):
        if self.heatmaps:
            return networks.KeypointEncoder(self.hidden, self.num_keypoints, self.fast_convs, self.conv_backend)
        return networks.FCEncoder(self.hidden, self.num_keypoints, self.fast_convs, self.conv_backend)

    def _renderer(self):
        if self.heatmaps:
            return networks.Renderer(self.hidden, self.num_keypoints, self.sigma, self.fast_convs, self.conv_backend)
        return networks.FCRenderer(self.hidden, self.num_keypoints, self.fast_convs, self.conv_backend)

    # ---- params -----------------------------------------------------------------------------
    def init(self, key: jax.Array) -> dict:
        k1, k2, k3 = jax.random.split(key, 3)
        img = jnp.zeros((1, 64, 64, 3))
        kp = jnp.zeros((1, 2 * self.num_keypoints))
        return {"encoder": self._encoder().init(k1, img),
                "renderer": self._renderer().init(k2, kp),
                "dynamics": self.dynamics.init(k3)}

    # ---- networks ---------------------------------------------------------------------------
    def encode(self, params, images: jnp.ndarray, transform: jnp.ndarray | None = None):
        """Images (N, 64, 64, 3) -> (keypoints (N, 2K), heatmap probabilities (N, 64, 64, K) or None).

        ``transform`` (N,) in {0..7}: dihedral augmentation applied before the encoder and
        undone on the heatmaps afterwards (heatmap models only).
        """
        if not self.heatmaps:
            return self._encoder().apply(params["encoder"], images), None
        if transform is not None:
            images = augment(images, transform)
        logits = self._encoder().apply(params["encoder"], images)
        if transform is not None:
            logits = unaugment(logits, transform)
        probs, kp = spatial_softmax(logits)
        return kp, probs

    def render(self, params, keypoints: jnp.ndarray) -> jnp.ndarray:
        """Keypoints (N, 2K) -> images (N, 64, 64, 3) in [0, 1]."""
        return self._renderer().apply(params["renderer"], keypoints)

    # ---- dynamics ---------------------------------------------------------------------------
    def acceleration(self, params, x, xd, u):
        """ẍ (2K,) for x, ẋ (2K,), u (A,)."""
        return self.dynamics.acceleration(params["dynamics"], x, xd, u)

    def rollout(self, params, x, xd, u, num_steps: int, solver: str | None = None, substeps: int = 1):
        """Positions and velocities (num_steps, 2K) after each of ``num_steps`` steps of dt.

        ``u``: (A,) held over every step, or (num_steps, A), action ``u[k]`` over step k.
        """
        if u.ndim == 2:
            if u.shape[0] != num_steps:
                raise ValueError(f"per-step actions have {u.shape[0]} rows; expected num_steps = {num_steps}")
            accel_u = lambda a, b, c: self.acceleration(params, a, b, c)
            return rollout_actions(accel_u, x, xd, u, self.dt, solver or self.solver, substeps)
        accel = lambda a, b: self.acceleration(params, a, b, u)
        return rollout(accel, x, xd, self.dt, num_steps, solver or self.solver, substeps)

    def initial_state(self, params, first_frames: jnp.ndarray):
        """Encode three frames (3, 64, 64, 3) -> (x, ẋ) at the middle frame, ẋ projected."""
        kp, _ = self.encode(params, first_frames)
        x, xd = central_differences(kp, self.dt)
        return x[0], self.dynamics.project_velocity(x[0], xd[0])

    def predict(self, params, frames: jnp.ndarray, action: jnp.ndarray):
        """Open-loop video prediction of a sequence.

        Args:
            frames: (T, 64, 64, 3) in [0, 1]; only the first three are used.
            action: (A,) constant action, or (T, A) with ``action[t]`` held from frame t to t+1.
        Returns:
            predicted images (T-2, 64, 64, 3) for frames 2..T-1 and their keypoints (T-2, 2K).
        """
        t = frames.shape[0]
        x, xd = self.initial_state(params, frames[:3])
        xs, _ = self.rollout(params, x, xd, action[1:t - 1] if action.ndim == 2 else action, t - 2)
        return self.render(params, xs), xs
