"""Loading a trained model as environment parameters, and the bank of encoded initial states."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from keycld.model import constraints as C
from keycld.model.keycld import KeyCLD
from keycld.model.keypoints import central_differences
from keycld_gym.functional import INTEGRATORS, EnvParams

MODELS_DIR = Path(__file__).resolve().parent / "models"
BANK_FILE = "reset_bank.npz"
BANK_VERSION = 3  # bump when the encoding of bank states changes


def default_checkpoint(system: str) -> Path:
    """The shipped model directory of ``system`` (raises if none ships yet)."""
    path = MODELS_DIR / system
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no shipped model for {system!r} in {MODELS_DIR}; pass checkpoint=RUN_DIR "
            f"(train one with `keycld train --environment {system} --control yes`)")
    return path


@partial(jax.jit, static_argnums=0)
def _encode(model: KeyCLD, weights, frames_u8: jnp.ndarray) -> jnp.ndarray:
    kp, _ = model.encode(weights, frames_u8.astype(jnp.float32) / 255.0)
    return kp


@partial(jax.jit, static_argnums=0)
def _project(model: KeyCLD, x, xd):
    if model.dynamics.constrained:
        x = C.project_position(model.dynamics.phi, x)
    return jnp.concatenate([x, model.dynamics.project_velocity(x, xd)])


def _on_manifold(model: KeyCLD, x, xd) -> np.ndarray:
    """Constrained models: x onto Φ(x) = 0, ẋ onto its tangent space; [x, ẋ] (4K,)."""
    return np.asarray(_project(model, jnp.asarray(x), jnp.asarray(xd)))


def encode_central(model: KeyCLD, weights, frames_u8: np.ndarray) -> np.ndarray:
    """Three frames (3, 64, 64, 3) -> [x, ẋ] (4K,) at the middle frame (central difference),
    projected onto the constraint manifold and its tangent space."""
    kp = _encode(model, weights, jnp.asarray(frames_u8))
    x, xd = central_differences(kp, model.dt)
    return _on_manifold(model, x[0], xd[0])


def encode_keypoints(model: KeyCLD, weights, frames_u8: np.ndarray) -> np.ndarray:
    """Frames (N, 64, 64, 3) uint8 -> keypoints (N, 2K) in image units."""
    return np.asarray(_encode(model, weights, jnp.asarray(frames_u8)))


def backward_state(model: KeyCLD, kp: np.ndarray) -> np.ndarray:
    """Keypoints of the last three frames (3, 2K), oldest first -> [x, ẋ] (4K,) at the newest.

    ẋ is the second-order backward difference (3x_t − 4x_{t−1} + x_{t−2}) / 2dt; both are
    projected as in ``encode_central``. It needs no future frame, so a controller on the real
    system can use it.
    """
    kp = jnp.asarray(kp)
    return _on_manifold(model, kp[2], (3 * kp[2] - 4 * kp[1] + kp[0]) / (2 * model.dt))


def encode_backward(model: KeyCLD, weights, frames_u8: np.ndarray) -> np.ndarray:
    """Last three frames (3, 64, 64, 3), oldest first -> [x, ẋ] (4K,) at the newest frame
    (``backward_state`` of their keypoints)."""
    return backward_state(model, encode_keypoints(model, weights, frames_u8))


def initial_frames(system: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reset the real task with ``seed`` and render three frames with zero action.

    Returns frames (3, 64, 64, 3) uint8 (at t = 0, dt, 2dt) and the true qpos, qvel at t = dt.
    """
    from keycld.tasks import load_task, render

    env = load_task(system, random=np.random.RandomState(seed))
    env.reset()
    zero = np.zeros(env.action_spec().shape)
    frames = [render(env.physics)]
    env.step(zero)
    qpos, qvel = env.physics.data.qpos.copy(), env.physics.data.qvel.copy()
    frames.append(render(env.physics))
    env.step(zero)
    frames.append(render(env.physics))
    return np.stack(frames), qpos, qvel


def build_bank(system: str, model: KeyCLD, weights, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Encoded initial states of ``size`` real resets (seeds seed … seed+size−1)."""
    states, qpos, qvel = [], [], []
    for i in range(size):
        frames, q, v = initial_frames(system, seed + i)
        states.append(encode_central(model, weights, frames))
        qpos.append(q)
        qvel.append(v)
    return {"states": np.stack(states).astype(np.float32), "qpos": np.stack(qpos), "qvel": np.stack(qvel),
            "seeds": np.arange(seed, seed + size)}


def weights_file(run_dir: Path) -> Path:
    """The file holding a run's weights: ``checkpoint.msgpack`` (training run) or
    ``params.msgpack`` (exported model)."""
    from keycld import checkpoint

    for name in (checkpoint.CHECKPOINT, checkpoint.PARAMS):
        if (run_dir / name).exists():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir} holds no {checkpoint.CHECKPOINT} or {checkpoint.PARAMS}")


def load_bank(run_dir: Path, system: str, model: KeyCLD, weights, size: int, seed: int = 0) -> dict:
    """The run directory's cached bank if it matches (size, seed, weights' SHA-256), else build
    it and cache it there when the directory is writable."""
    from keycld.checkpoint import file_sha256

    path = run_dir / BANK_FILE
    digest = file_sha256(weights_file(run_dir))
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                bank = {k: z[k] for k in z.files}
            if (int(bank.get("version", 0)) == BANK_VERSION and len(bank["seeds"]) == size
                    and int(bank["seeds"][0]) == seed and str(bank["weights_sha256"]) == digest):
                return bank
        except Exception:  # unreadable cache: rebuild it
            pass
    bank = build_bank(system, model, weights, size, seed)
    bank["weights_sha256"] = np.array(digest)
    bank["version"] = np.int64(BANK_VERSION)
    if os.access(run_dir, os.W_OK):
        tmp = run_dir / f".{BANK_FILE}.tmp{os.getpid()}.npz"
        np.savez(tmp, **bank)
        os.replace(tmp, path)
    return bank


def load_model_params(system: str, checkpoint: str | os.PathLike | None = None) -> EnvParams:
    """EnvParams of a run directory (default: the shipped model) with an empty reset bank:
    for encoders and controllers that never reset a learned env."""
    from keycld.train import load_model

    run_dir = Path(checkpoint) if checkpoint is not None else default_checkpoint(system)
    model, weights, cfg = load_model(run_dir)
    if cfg.environment != system:
        raise ValueError(f"checkpoint {run_dir} is a {cfg.environment!r} model, not {system!r}")
    return EnvParams(weights=weights, bank=jnp.zeros((1, 4 * model.num_keypoints)), model=model)


def load_env_params(system: str, checkpoint: str | os.PathLike | None = None, integrator: str = "rk4",
                    substeps: int = 4, bank_size: int = 64, bank_seed: int = 0) -> tuple[EnvParams, dict]:
    """(EnvParams, bank dict) for a run directory (default: the shipped model of ``system``)."""
    from keycld.train import load_model

    if integrator not in INTEGRATORS:
        raise ValueError(f"unknown integrator {integrator!r}; allowed: {', '.join(INTEGRATORS)}")
    if not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
    if not isinstance(bank_size, int) or bank_size < 1:
        raise ValueError(f"bank_size must be a positive integer, got {bank_size!r}")
    run_dir = Path(checkpoint) if checkpoint is not None else default_checkpoint(system)
    model, weights, cfg = load_model(run_dir)
    if cfg.environment != system:
        raise ValueError(f"checkpoint {run_dir} is a {cfg.environment!r} model, not {system!r}")
    bank = load_bank(run_dir, system, model, weights, bank_size, bank_seed)
    params = EnvParams(weights=weights, bank=jnp.asarray(bank["states"]), model=model,
                       integrator=integrator, substeps=substeps,
                       action_scale=2.0)
    return params, bank
