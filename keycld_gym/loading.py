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
BANK_VERSION = 4  # bump when the encoding of bank states changes


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
def _project(model: KeyCLD, x, xd, offset):
    if model.dynamics.constrained:
        x, xd = C.project_state(C.shifted(model.dynamics.phi, offset), x, xd)
    return jnp.concatenate([x, xd])


def _num_constraints(model: KeyCLD) -> int:
    return len(model.dynamics.phi(jnp.zeros(2 * model.num_keypoints)))


def _offset(model: KeyCLD, offset) -> jnp.ndarray:
    return jnp.zeros(_num_constraints(model)) if offset is None else jnp.asarray(offset, jnp.float32)


def _on_manifold(model: KeyCLD, x, xd, offset=None) -> np.ndarray:
    """Constrained models: x onto Φ(x) = c (c = ``offset``, default 0), ẋ onto its tangent
    space; [x, ẋ] (4K,)."""
    return np.asarray(_project(model, jnp.asarray(x), jnp.asarray(xd), _offset(model, offset)))


def constraint_offset(model: KeyCLD, kp: np.ndarray) -> np.ndarray:
    """The level c of Φ(x) = c that encoded keypoints kp (N, 2K) lie on: the median of Φ over
    them, (C,); zeros for models without constraints.

    The paper's lengths (DESIGN.md §4) need not match where the encoder puts a keypoint along a
    link (measured: the acrobot's elbow sits 0.41 image units from the centre, not 0.3), and the
    constrained dynamics conserve Φ at any level; projecting the env's states onto c keeps them
    where the encoder, the potential and the renderer were trained.
    """
    if not model.dynamics.constrained:
        return np.zeros(_num_constraints(model), np.float32)
    residual = np.asarray(jax.vmap(model.dynamics.phi)(jnp.asarray(kp)))
    return np.median(residual, axis=0).astype(np.float32)


def encode_central(model: KeyCLD, weights, frames_u8: np.ndarray, offset=None) -> np.ndarray:
    """Three frames (3, 64, 64, 3) -> [x, ẋ] (4K,) at the middle frame (central difference),
    projected onto Φ(x) = offset (default 0) and its tangent space."""
    kp = _encode(model, weights, jnp.asarray(frames_u8))
    x, xd = central_differences(kp, model.dt)
    return _on_manifold(model, x[0], xd[0], offset)


def encode_keypoints(model: KeyCLD, weights, frames_u8: np.ndarray) -> np.ndarray:
    """Frames (N, 64, 64, 3) uint8 -> keypoints (N, 2K) in image units."""
    return np.asarray(_encode(model, weights, jnp.asarray(frames_u8)))


def backward_state(model: KeyCLD, kp: np.ndarray, offset=None) -> np.ndarray:
    """Keypoints of the last three frames (3, 2K), oldest first -> [x, ẋ] (4K,) at the newest.

    ẋ is the second-order backward difference (3x_t − 4x_{t−1} + x_{t−2}) / 2dt; both are
    projected as in ``encode_central``. It needs no future frame, so a controller on the real
    system can use it.
    """
    kp = jnp.asarray(kp)
    return _on_manifold(model, kp[2], (3 * kp[2] - 4 * kp[1] + kp[0]) / (2 * model.dt), offset)


def encode_backward(model: KeyCLD, weights, frames_u8: np.ndarray, offset=None) -> np.ndarray:
    """Last three frames (3, 64, 64, 3), oldest first -> [x, ẋ] (4K,) at the newest frame
    (``backward_state`` of their keypoints)."""
    return backward_state(model, encode_keypoints(model, weights, frames_u8), offset)


def pose_keypoints(system: str, params: EnvParams, qpos) -> np.ndarray:
    """x (2K,): the encoder's keypoints of the real system rendered at rest at ``qpos``,
    projected onto the params' manifold Φ(x) = c (e.g. the goal x* of a controller)."""
    from keycld.tasks import load_task, render, set_state

    physics = load_task(system).physics
    set_state(physics, np.asarray(qpos, float), np.zeros(physics.model.nv))
    frame = render(physics)
    state = encode_central(params.model, params.weights, np.stack([frame] * 3), params.constraint_offset)
    return state[: state.shape[0] // 2]


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


OFFSET_SEEDS = range(16)  # real resets whose encoded frames fix a model's constraint offset


def build_bank(system: str, model: KeyCLD, weights, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Encoded initial states of ``size`` real resets (seeds seed … seed+size−1).

    ``constraint_offset`` (C,) is the median Φ of the encoded keypoints of the three frames of
    the resets with seeds ``OFFSET_SEEDS`` (the same whatever the bank's size and seed);
    ``states`` (size, 4K) are projected onto Φ(x) = constraint_offset.
    """
    rendered = {}

    def keypoints(s):
        if s not in rendered:
            frames, q, v = initial_frames(system, s)
            rendered[s] = (encode_keypoints(model, weights, frames), q, v)
        return rendered[s]

    seeds = list(range(seed, seed + size))
    kps = [keypoints(s) for s in seeds]
    offset = constraint_offset(model, np.concatenate([keypoints(s)[0] for s in OFFSET_SEEDS]))
    states = []
    for kp, _, _ in kps:
        x, xd = central_differences(jnp.asarray(kp), model.dt)
        states.append(_on_manifold(model, x[0], xd[0], offset))
    return {"states": np.stack(states).astype(np.float32), "qpos": np.stack([k[1] for k in kps]),
            "qvel": np.stack([k[2] for k in kps]), "seeds": np.asarray(seeds), "constraint_offset": offset}


def weights_file(run_dir: Path) -> Path:
    """The file holding a run's weights: ``checkpoint.msgpack`` (training run) or
    ``params.msgpack`` (exported model)."""
    from keycld import checkpoint

    for name in (checkpoint.CHECKPOINT, checkpoint.PARAMS):
        if (run_dir / name).exists():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir} holds no {checkpoint.CHECKPOINT} or {checkpoint.PARAMS}")


_PER_RESET = ("states", "qpos", "qvel", "seeds")  # bank entries with one row per reset (build_bank)


def load_bank(run_dir: Path, system: str, model: KeyCLD, weights, size: int, seed: int = 0) -> dict:
    """The bank of ``size`` resets from seed ``seed``.

    Served from rows of the run directory's cached bank when those seeds lie in it (and it
    matches the weights' SHA-256 and ``BANK_VERSION``): each row depends only on its own seed,
    and the constraint offset on neither size nor seed. Otherwise built, and cached when the
    directory is writable and the new bank covers the cached one's seeds, or starts at seed 0
    (the default) where the cached one does not; other requests never replace the cache.
    """
    from keycld.checkpoint import file_sha256

    path = run_dir / BANK_FILE
    digest = file_sha256(weights_file(run_dir))
    cached_seeds = None
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                cached = {k: z[k] for k in z.files}
            if int(cached.get("version", 0)) == BANK_VERSION and str(cached["weights_sha256"]) == digest:
                cached_seeds = [int(s) for s in cached["seeds"]]
                start = seed - cached_seeds[0]
                if start >= 0 and cached_seeds[start:start + size] == list(range(seed, seed + size)):
                    return {k: (v[start:start + size] if k in _PER_RESET else v) for k, v in cached.items()}
        except Exception:  # unreadable or malformed cache: rebuild it
            cached_seeds = None
    bank = build_bank(system, model, weights, size, seed)
    bank["weights_sha256"] = np.array(digest)
    bank["version"] = np.int64(BANK_VERSION)
    covers = not cached_seeds or (seed <= cached_seeds[0] and seed + size >= cached_seeds[-1] + 1)
    default_wins = seed == 0 and bool(cached_seeds) and cached_seeds[0] != 0
    if (covers or default_wins) and os.access(run_dir, os.W_OK):
        tmp = run_dir / f".{BANK_FILE}.tmp{os.getpid()}.npz"
        np.savez(tmp, **bank)
        os.replace(tmp, path)
    return bank


def load_model_params(system: str, checkpoint: str | os.PathLike | None = None) -> EnvParams:
    """EnvParams of a run directory (default: the shipped model) with an empty reset bank, for
    encoders and controllers that never reset a learned env. The constraint offset comes from
    the run's cached bank (built and cached once if missing)."""
    params, _ = load_env_params(system, checkpoint)
    return params.replace(bank=jnp.zeros((1, 2 * params.dim)))


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
                       integrator=integrator, substeps=substeps, action_scale=2.0,
                       constraint_offset=jnp.asarray(bank["constraint_offset"]))
    return params, bank
