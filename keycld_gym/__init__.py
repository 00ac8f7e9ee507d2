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

# The shipped models, per System: (model version, SHA-256 of params.msgpack, first keycld-gym release
# that shipped it), oldest first. ``KeyCLD-<Name>-v<version>`` runs the last entry; replacing a shipped
# model appends an entry (and so a new id version), and the older ids stay registered and raise,
# naming the release that has them. tests/test_vector.py checks the shipped files against this.
MODEL_VERSIONS = {
    "pendulum": [(0, "2d328aa4a11a892cc9c842ec3f6a837e30ec49bac223c599cc5a39d250d80605", "0.1.0")],
    "cartpole": [(0, "a097ec554a9c2a1bd612d9714ec389ab8021bdf8008e8bc235efbdaaed83f0ce", "0.1.0")],
    "acrobot": [(0, "c161daf54509ea96bf75020506613e65fe2310f15789e7e4637534bc713de5bf", "0.1.0")],
}


def learned_id(name: str, version: int) -> str:
    """The id of version ``version`` of a shipped model, e.g. ``KeyCLD-Pendulum-v0``."""
    return f"KeyCLD-{name}-v{version}"


def register_versions(name: str, system: str, versions: list[tuple[int, str, str]]) -> None:
    """Register the ids of a System's shipped model versions (see ``MODEL_VERSIONS``)."""
    *retired, (current, sha, _) = versions
    env_id = learned_id(name, current)
    if env_id not in registry:
        register(id=env_id, entry_point=f"keycld_gym.paper:KeyCLD{name}Env",
                 vector_entry_point=f"keycld_gym.paper:KeyCLD{name}VectorEnv", max_episode_steps=MAX_EPISODE_STEPS,
                 kwargs={"model_version": current, "weights_sha256": sha})
    for version, old_sha, release in retired:
        if learned_id(name, version) not in registry:
            register(id=learned_id(name, version), entry_point="keycld_gym.paper:retired_model",
                     vector_entry_point="keycld_gym.paper:retired_model", max_episode_steps=MAX_EPISODE_STEPS,
                     kwargs={"env_id": learned_id(name, version), "weights_sha256": old_sha, "release": release,
                             "current_id": env_id})


def _register() -> None:
    if "KeyCLD-v0" not in registry:
        register(id="KeyCLD-v0", entry_point="keycld_gym.envs:KeyCLDEnv",
                 vector_entry_point="keycld_gym.vector:KeyCLDVectorEnv", max_episode_steps=MAX_EPISODE_STEPS)
    for name, system in SYSTEMS.items():
        register_versions(name, system, MODEL_VERSIONS[system])
        if f"KeyCLD-{name}-Real-v0" not in registry:
            register(id=f"KeyCLD-{name}-Real-v0", entry_point=f"keycld_gym.paper:KeyCLD{name}RealEnv",
                     max_episode_steps=MAX_EPISODE_STEPS)


_register()

__all__ = ["SYSTEMS", "MODEL_VERSIONS", "MAX_EPISODE_STEPS", "learned_id"]
