"""keycld_gym: trained KeyCLD models as Gymnasium environments, next to the real tasks.

Importing registers ``KeyCLD-v0`` (any trained model: ``gym.make("KeyCLD-v0", checkpoint=DIR)``),
``KeyCLD-{Pendulum,Cartpole,Acrobot}-v0`` (the shipped models of the paper's systems) and
``KeyCLD-{Pendulum,Cartpole,Acrobot}-Real-v0`` (MuJoCo); ``gym.make("keycld_gym:KeyCLD-Cartpole-v0")``
works without importing first. ``keycld_gym.functional`` is the pure JAX core.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import keycld  # noqa: E402,F401  (XLA flags before jax starts)
from gymnasium.envs.registration import register, registry  # noqa: E402
from keycld_gym.compare import compare  # noqa: E402,F401  (diagnostics; light import)

SYSTEMS = {"Pendulum": "pendulum", "Cartpole": "cartpole", "Acrobot": "acrobot"}  # id part -> System name
MAX_EPISODE_STEPS = 1000  # dm_control's episode length; every env also truncates there itself


def _register() -> None:
    if "KeyCLD-v0" not in registry:
        register(id="KeyCLD-v0", entry_point="keycld_gym.envs:KeyCLDEnv",
                 vector_entry_point="keycld_gym.vector:KeyCLDVectorEnv", max_episode_steps=MAX_EPISODE_STEPS)
    for name in SYSTEMS:
        if f"KeyCLD-{name}-v0" not in registry:
            register(id=f"KeyCLD-{name}-v0", entry_point=f"keycld_gym.paper:KeyCLD{name}Env",
                     vector_entry_point=f"keycld_gym.paper:KeyCLD{name}VectorEnv",
                     max_episode_steps=MAX_EPISODE_STEPS)
        if f"KeyCLD-{name}-Real-v0" not in registry:
            register(id=f"KeyCLD-{name}-Real-v0", entry_point=f"keycld_gym.paper:KeyCLD{name}RealEnv",
                     max_episode_steps=MAX_EPISODE_STEPS)


_register()

__all__ = ["SYSTEMS"]
