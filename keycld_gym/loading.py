"""Loading a trained model as environment parameters, and the bank of encoded initial states.

The reset bank of a model of one of the paper's tasks holds encoded real resets (MuJoCo,
the task's own reset distribution); the bank of your own system holds the encoded first three
frames of every training run. ``keycld export`` writes the bank into the exported model, so
loading an export only reads files.
"""
from __future__ import annotations

import dataclasses
import os
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from keycld import fileio, rundir
from keycld.model import constraints as C
from keycld.model.keycld import KeyCLD
from keycld.model.keypoints import central_differences
from keycld_gym.functional import DEFAULT_SUBSTEPS, INTEGRATORS, EnvParams

MODELS_DIR = Path(__file__).resolve().parent / "models"
BANK_FILE = rundir.BANK
BANK_VERSION = 4  # bump when the encoding of bank states changes
DEFAULT_BANK_SIZE = 64  # real resets in a bank of one of the paper's tasks
MAX_DATA_BANK = 4096  # a user system's bank: the first three frames of up to this many training runs


def default_checkpoint(system: str) -> Path:
    """The shipped model directory of ``system`` (raises if none ships yet)."""
    path = MODELS_DIR / system
    if not (path / rundir.CONFIG).exists():
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
    return model.system.num_constraints if model.dynamics.constrained else 0


def _offset(model: KeyCLD, offset) -> jnp.ndarray:
    return jnp.zeros(_num_constraints(model)) if offset is None else jnp.asarray(offset, jnp.float32)


def _on_manifold(model: KeyCLD, x, xd, offset=None) -> np.ndarray:
    """Constrained models: x onto Φ(x) = c (c = ``offset``, default 0), ẋ onto its tangent
    space; [x, ẋ] (4K,)."""
    return np.asarray(_project(model, jnp.asarray(x), jnp.asarray(xd), _offset(model, offset)))


def constraint_offset(model: KeyCLD, kp: np.ndarray) -> np.ndarray:
    """The level c of Φ(x) = c that encoded keypoints kp (N, 2K) lie on: the median of Φ over
    them, (C,); zeros for models without constraints.

    The paper's lengths (``keycld.systems``) need not match where the encoder puts a keypoint along a
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


def build_data_bank(model: KeyCLD, weights, dataset) -> dict[str, np.ndarray]:
    """Encoded initial states of a user system: frames 0–2 of each training run of ``dataset``
    (at most ``MAX_DATA_BANK``), central-differenced at frame 1 and projected onto the level
    Φ(x) = c of their own keypoints (c = the median Φ, ``constraint_offset``).

    Returns states (N, 4K) float32, seeds (N,) (the run indices) and constraint_offset (C,).
    """
    train = dataset.split("train")
    n = min(len(train), MAX_DATA_BANK)
    first = train.frames[:n, :3]
    kp = encode_keypoints(model, weights, first.reshape(-1, 64, 64, 3)).reshape(n, 3, -1)
    offset = constraint_offset(model, kp.reshape(-1, kp.shape[-1]))
    x, xd = jax.vmap(lambda k: central_differences(k, model.dt))(jnp.asarray(kp))
    states = np.stack([_on_manifold(model, x[i, 0], xd[i, 0], offset) for i in range(n)])
    return {"states": states.astype(np.float32), "seeds": np.arange(n), "constraint_offset": offset}


BANK_MANIFOLD_TOL = 1e-3  # max |Φ(x) − c| of a bank state (image units²; built banks: ~1e-6)


def _state_limits(model: KeyCLD) -> np.ndarray:
    """(4K,) bounds of |[x, ẋ]|: the env's position and velocity limits (its observation space)."""
    defaults = {f.name: f.default for f in dataclasses.fields(EnvParams)}
    d = 2 * model.num_keypoints
    return np.concatenate([np.full(d, defaults["position_limit"]), np.full(d, defaults["velocity_limit"])])


def _check_bank(bank: dict, model: KeyCLD, path: Path) -> dict:
    """``bank`` when its states and constraint offset are usable by the env, else ValueError naming
    ``path`` and the bad entry: states (N, 4K) finite and inside the observation space (positions
    within ±position_limit, velocities within ±velocity_limit), a finite offset c (C,), and each
    state's positions on the manifold Φ(x) = c (within ``BANK_MANIFOLD_TOL``)."""
    d = 4 * model.num_keypoints
    for key in ("states", "constraint_offset"):
        if key not in bank:
            raise ValueError(f"reset bank {path} has no {key!r} entry")
    states, offset = np.asarray(bank["states"]), np.asarray(bank["constraint_offset"])
    if states.dtype.kind != "f" or states.ndim != 2 or states.shape[1] != d or len(states) == 0:
        raise ValueError(f"reset bank {path}: 'states' must be floats of shape (N, {d}), got {states.dtype} "
                         f"{states.shape}")
    bad = np.flatnonzero(~np.all(np.isfinite(states), axis=1))
    if len(bad):
        raise ValueError(f"reset bank {path}: 'states' row {bad[0]} is not finite: {states[bad[0]].tolist()}")
    limits = _state_limits(model)
    bad = np.flatnonzero(np.any(np.abs(states) > limits, axis=1))
    if len(bad):
        raise ValueError(f"reset bank {path}: 'states' row {bad[0]} {states[bad[0]].tolist()} is outside the "
                         f"observation space (|x| <= {limits[0]}, |ẋ| <= {limits[-1]})")
    if offset.dtype.kind != "f" or offset.shape != (_num_constraints(model),) or not np.all(np.isfinite(offset)):
        raise ValueError(f"reset bank {path}: 'constraint_offset' must be {_num_constraints(model)} finite floats, "
                         f"got {offset.dtype} {offset.tolist()}")
    if model.dynamics.constrained:
        residual = np.abs(np.asarray(jax.vmap(model.dynamics.phi)(jnp.asarray(states[:, :d // 2]))) - offset)
        worst = int(np.argmax(residual.max(axis=1)))
        if residual[worst].max() > BANK_MANIFOLD_TOL:
            raise ValueError(f"reset bank {path}: 'states' row {worst} lies {residual[worst].max():.3g} off the "
                             f"manifold Φ(x) = constraint_offset {offset.tolist()} (allowed: {BANK_MANIFOLD_TOL})")
    return bank


_PER_RESET = ("states", "qpos", "qvel", "seeds")  # bank entries with one row per reset (build_bank)


def load_bank(run_dir: Path, model: KeyCLD, weights, size: int | None, seed: int = 0, cfg=None) -> dict:
    """The bank of ``size`` resets from seed ``seed`` (``size`` None: the whole bank of a user
    system, 64 resets for the paper's tasks).

    Your own system: the run directory's bank (an export's) if it holds one, else built from
    the training data in memory (nothing is written); a request larger than the bank is an
    error. The paper's tasks: as follows.

    Served from rows of the run directory's cached bank when those seeds lie in it (and it
    matches the weights' SHA-256 and ``BANK_VERSION``): each row depends only on its own seed,
    and the constraint offset on neither size nor seed. Otherwise built, and cached when the
    directory is writable and the new bank covers the cached one's seeds, or starts at seed 0
    (the default) where the cached one does not; other requests never replace the cache.
    """
    cfg = cfg or rundir.load_config(run_dir)
    path = run_dir / BANK_FILE
    digest = rundir.weights_sha256(run_dir)
    if cfg.user_data:
        return _user_bank(run_dir, model, weights, cfg, digest, size, seed)
    size = DEFAULT_BANK_SIZE if size is None else size
    cached_seeds = None
    cached = _read_bank(path, digest, model) if path.exists() else None
    if cached is not None:
        cached_seeds = [int(s) for s in cached["seeds"]]
        start = seed - cached_seeds[0]
        if start >= 0 and cached_seeds[start:start + size] == list(range(seed, seed + size)):
            return {k: (v[start:start + size] if k in _PER_RESET else v) for k, v in cached.items()}
    bank = stamp_bank(build_bank(model.system.name, model, weights, size, seed), digest)
    covers = not cached_seeds or (seed <= cached_seeds[0] and seed + size >= cached_seeds[-1] + 1)
    default_wins = seed == 0 and bool(cached_seeds) and cached_seeds[0] != 0
    if (covers or default_wins) and os.access(run_dir, os.W_OK):
        save_bank(path, bank)
    return bank


def _user_bank(run_dir: Path, model: KeyCLD, weights, cfg, digest: str, size: int | None, seed: int) -> dict:
    path = run_dir / BANK_FILE
    if path.exists():
        bank = _read_bank(path, digest, model)
        if bank is None:
            raise ValueError(f"reset bank {path} was not built from these weights (or by another version); "
                             "export the run again")
    else:
        from keycld.data import load_runs
        bank = build_data_bank(model, weights, load_runs(cfg.data, model.system, cfg.data_sha256))
    n = len(bank["states"])
    size = n - seed if size is None else size
    if seed < 0 or size < 1 or seed + size > n:
        raise ValueError(f"the reset bank of {run_dir} holds {n} states (the training runs' first frames); "
                         f"bank_seed + bank_size must be <= {n}, got {seed} + {size}")
    bank = {k: (v[seed:seed + size] if k in _PER_RESET else v) for k, v in bank.items()}
    return _check_bank(bank, model, path)


def stamp_bank(bank: dict, weights_sha256: str) -> dict:
    """``bank`` with the SHA-256 of the weights it was encoded with and ``BANK_VERSION``."""
    return {**bank, "weights_sha256": np.array(weights_sha256), "version": np.int64(BANK_VERSION)}


def _read_bank(path: Path, weights_sha256: str, model: KeyCLD) -> dict | None:
    """The bank stored at ``path``, or None when it was built by other weights or another
    ``BANK_VERSION``; ValueError naming the file and the entry when it cannot be read or its
    contents are unusable (``_check_bank``; also the per-reset entries' lengths)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            bank = {k: z[k] for k in z.files}
    except Exception as err:
        raise ValueError(f"reset bank {path} is unreadable ({err}); delete it to rebuild it") from None
    try:
        stale = int(bank.get("version", 0)) != BANK_VERSION or str(bank.get("weights_sha256")) != weights_sha256
    except (TypeError, ValueError):
        stale = True
    if stale:
        return None
    try:
        _check_bank(bank, model, path)
        rows = {k: len(bank[k]) for k in _PER_RESET if k in bank}
        if len(set(rows.values())) > 1:
            raise ValueError(f"reset bank {path}: the per-reset entries have different lengths {rows}")
    except ValueError as err:
        raise ValueError(f"{err}; the file matches these weights, so it was damaged: delete it to rebuild it") from None
    return bank


def save_bank(path: Path, bank: dict) -> None:
    """Write a stamped bank (``stamp_bank``) atomically."""
    fileio.atomic_write(path, lambda f: np.savez(f, **bank))


def load_model_params(system: str, checkpoint: str | os.PathLike | None = None) -> EnvParams:
    """EnvParams of a run directory (default: the shipped model) with an empty reset bank, for
    encoders and controllers that never reset a learned env. The constraint offset comes from
    the run's cached bank (built and cached once if missing)."""
    params, _ = load_env_params(system, checkpoint)
    return params.replace(bank=jnp.zeros((1, 2 * params.dim)))


def model_dir(system: str | None, checkpoint: str | os.PathLike | None) -> Path:
    """The directory an env loads: ``checkpoint``, else the shipped model of ``system``."""
    if checkpoint is None and system is None:
        raise ValueError("checkpoint is required: a run or exported-model directory (keycld train / keycld export)")
    return Path(checkpoint) if checkpoint is not None else default_checkpoint(system)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def model_identity(system: str | None, checkpoint: str | os.PathLike | None, model_version: int | None = None,
                   weights_sha256: str | None = None) -> dict:
    """Which model an env runs: ``{"checkpoint", "model_version", "weights_sha256"}`` (the
    version as its ``model.json`` records it, None for a training run).

    ``model_version``/``weights_sha256`` (a registered id's) name the shipped model the id stands
    for; they apply when ``checkpoint`` is None, and a shipped model that is not that one is a
    ValueError (an inconsistent installation), so an id never runs another model silently.
    """
    run_dir = model_dir(system, checkpoint)
    ident = {"checkpoint": str(run_dir), "model_version": rundir.read_model_info(run_dir).get("model_version"),
             "weights_sha256": rundir.weights_sha256(run_dir)}
    if checkpoint is None:
        for key, wanted in (("model_version", model_version), ("weights_sha256", weights_sha256)):
            if wanted is not None and ident[key] != wanted:
                raise ValueError(f"the shipped {system} model in {run_dir} has {key} {ident[key]!r}, but this id "
                                 f"names {key} {wanted!r}: the installation is inconsistent; reinstall keycld-gym")
    return ident


def load_env_params(system: str | None = None, checkpoint: str | os.PathLike | None = None,
                    integrator: str = "rk4", substeps: int | None = None, bank_size: int | None = None,
                    bank_seed: int = 0) -> tuple[EnvParams, dict]:
    """(EnvParams, bank dict) for a run or exported-model directory ``checkpoint`` (default: the
    shipped model of the built-in ``system``). ``system``, when given with a checkpoint, must be
    the System's name. ``bank_size`` None: the whole bank of a user system, 64 resets otherwise.
    ``substeps`` None: the number ``keycld export`` measured for the model (``model.json``'s
    ``substeps``, :func:`keycld_gym.functional.choose_substeps`), else ``DEFAULT_SUBSTEPS`` (4).
    """
    if integrator not in INTEGRATORS:
        raise ValueError(f"unknown integrator {integrator!r}; allowed: {', '.join(INTEGRATORS)}")
    if substeps is not None:
        _positive_int("substeps", substeps)
    if bank_size is not None and (isinstance(bank_size, bool) or not isinstance(bank_size, int) or bank_size < 1):
        raise ValueError(f"bank_size must be a positive integer or None, got {bank_size!r}")
    run_dir = model_dir(system, checkpoint)
    if not rundir.is_run(run_dir):
        raise ValueError(f"checkpoint {str(run_dir)!r} is not a run or exported-model directory "
                         f"(needs {rundir.CONFIG} and {rundir.CHECKPOINT} or {rundir.PARAMS})")
    model, weights, cfg = rundir.load_model(run_dir)
    if system is not None and model.system.name != system:
        raise ValueError(f"checkpoint {run_dir} is a {model.system.name!r} model, not {system!r}")
    bank = load_bank(run_dir, model, weights, bank_size, bank_seed, cfg)
    if substeps is None:
        info = rundir.read_model_info(run_dir)
        substeps = (_positive_int(f"{run_dir / rundir.MODEL_INFO}: field 'substeps'", info["substeps"])
                    if "substeps" in info else DEFAULT_SUBSTEPS)
    params = EnvParams(weights=weights, bank=jnp.asarray(bank["states"]), model=model,
                       integrator=integrator, substeps=substeps, action_scale=model.system.action_scale,
                       constraint_offset=jnp.asarray(bank["constraint_offset"]))
    return params, bank
