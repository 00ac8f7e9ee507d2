"""KeyCLD datasets: generation (parallel, deterministic), caching and loading.

A dataset is ``num_runs`` sequences of ``num_frames`` 64×64 RGB frames of one of the paper's
tasks (``keycld.tasks``), made exactly as the paper made them:

* run ``i`` uses seed ``first_seed + i`` and one ``numpy.random.RandomState(seed)`` for
  everything, in this order: (1) the task's ``random``; (2) a constant action
  ``uniform(-2, 2, A)``; (3) unless control is "no", one ``rand()``: below 0.2 the action is
  zeroed; for "underactuated" the second action is then zeroed too; for control "no" the
  action is zero and nothing is drawn; (4) ``env.reset()``; (5) for init "random", joint
  positions ``uniform(qpos_low, qpos_high)`` then velocities ``uniform(-0.1, 0.1, nv)``,
  written inside the physics' reset context.
* A frame (and the time, qpos, qvel) is recorded after every ``env.step(action)``.
* The last ``num_runs // 10`` runs (50 of 500) are the validation split.

On disk a dataset is a compressed ``data.npz`` (uint8 frames) plus ``manifest.json`` holding the
generation parameters, the SHA-256 of the npz and the dm_control and mujoco versions that
rendered the frames. Both are written atomically. A cache whose hash or contents do not check
out, or whose frames were rendered with other (or unrecorded) dm_control/mujoco versions, is
reported (with its path and the versions) and regenerated, so pixels of two renderers never mix.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

from keycld.fileio import atomic_write, locked, sha256, write_json
from keycld.tasks import ENVIRONMENTS, TASK_SPECS, check_environment

INIT_MODES = ("random", "rest")
CONTROLS = ("no", "underactuated", "yes")
FORMAT_VERSION = 1
GRID_SIZE = 16
_ARRAY_KEYS = ("frames", "qpos", "qvel", "time", "action", "seed")


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Parameters that fully determine a dataset (and its cache entry)."""

    environment: str
    init_mode: str = "random"
    control: str = "yes"
    num_runs: int = 500
    num_frames: int = 50
    first_seed: int = 0

    def __post_init__(self):
        validate_config(self)

    @property
    def name(self) -> str:
        return (f"{self.environment}-{self.init_mode}-{self.control}"
                f"-r{self.num_runs}-f{self.num_frames}-s{self.first_seed}-v{FORMAT_VERSION}")

    @property
    def num_val(self) -> int:
        """Number of validation runs: the last tenth (50 of 500), at least 1."""
        return num_val_runs(self.num_runs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate_config(cfg: DatasetConfig) -> None:
    """Raise ValueError naming the bad value and the allowed ones."""
    check_environment(cfg.environment)
    if cfg.init_mode not in INIT_MODES:
        raise ValueError(f"unknown init_mode {cfg.init_mode!r}; allowed: {', '.join(INIT_MODES)}")
    if cfg.control not in CONTROLS:
        raise ValueError(f"unknown control {cfg.control!r}; allowed: {', '.join(CONTROLS)}")
    if cfg.control == "underactuated" and TASK_SPECS[cfg.environment].num_actions < 2:
        raise ValueError(
            f"control 'underactuated' needs two actuators; {cfg.environment!r} has one "
            "(allowed for pendulum: no, yes)")
    for field in ("num_runs", "num_frames"):
        value = getattr(cfg, field)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{field} must be a positive integer, got {value!r}")
    if cfg.num_frames < 3:
        raise ValueError(f"num_frames must be at least 3 (central differences), got {cfg.num_frames}")
    if not isinstance(cfg.first_seed, (int, np.integer)) or cfg.first_seed < 0:
        raise ValueError(f"first_seed must be a non-negative integer, got {cfg.first_seed!r}")


def default_cache_dir() -> Path:
    """``$KEYCLD_CACHE`` if set, else ``~/.cache/keycld``."""
    env = os.environ.get("KEYCLD_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "keycld"


def check_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """Create ``cache_dir`` if needed and prove it writable, else raise ValueError."""
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as err:
        raise ValueError(f"cache dir {str(path)!r} is not writable: {err}") from None
    return path


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
_ENV_CACHE: dict[str, tuple] = {}


def _task_env(environment: str):
    """(environment, camera renderer): one per process and system, reused across runs.

    Rebuilding per run (as the paper's code does) gives the same numbers: the RandomState
    handed to the task is only stored at construction, and ``reset`` calls ``mj_resetData``.
    """
    if environment not in _ENV_CACHE:
        from keycld.tasks import CameraRenderer, load_task
        env = load_task(environment)
        _ENV_CACHE[environment] = (env, CameraRenderer(env.physics))
    return _ENV_CACHE[environment]


def generate_run(environment: str, init_mode: str, control: str, seed: int, num_frames: int,
                 fresh_env: bool = False) -> dict[str, np.ndarray]:
    """Simulate one run and return its arrays (see module docstring for the protocol).

    Returns:
        frames (T, 64, 64, 3) uint8; qpos, qvel (T, nq) float64; time (T,) float64;
        action (A,) float64.
    """
    from keycld.tasks import load_task, render, set_state

    spec = TASK_SPECS[environment]
    rs = np.random.RandomState(seed)
    if fresh_env:  # the paper's way: a new environment per run, physics.render per frame
        env = load_task(environment, random=rs)
        frame = lambda: render(env.physics)
    else:
        env, frame = _task_env(environment)
        env.task._random = rs  # same effect as passing `random=rs` at construction
    action = rs.uniform(-2.0, 2.0, env.action_spec().shape)
    if control == "no":
        action = np.zeros_like(action)
    elif rs.rand() < 0.2:
        action = np.zeros_like(action)
    if control == "underactuated":
        action[1] = 0.0
    env.reset()
    physics = env.physics
    if init_mode == "random":
        qpos = rs.uniform(spec.qpos_low, spec.qpos_high)
        qvel = rs.uniform(-spec.qvel_scale, spec.qvel_scale, physics.model.nv)
        set_state(physics, qpos, qvel)
    frames = np.empty((num_frames, 64, 64, 3), np.uint8)
    nq, nv = physics.model.nq, physics.model.nv
    qpos_t, qvel_t, time_t = np.empty((num_frames, nq)), np.empty((num_frames, nv)), np.empty(num_frames)
    for t in range(num_frames):
        env.step(action)
        frames[t] = frame()
        qpos_t[t], qvel_t[t], time_t[t] = physics.data.qpos, physics.data.qvel, physics.data.time
    return dict(frames=frames, qpos=qpos_t, qvel=qvel_t, time=time_t, action=action)


def _worker_init() -> None:
    # One llvmpipe thread per process: the processes are the parallelism.
    os.environ.setdefault("LP_NUM_THREADS", "1")
    os.environ.setdefault("MUJOCO_GL", "egl")


def _generate_chunk(cfg_dict: dict, seeds: list[int]) -> list[dict[str, np.ndarray]]:
    cfg = DatasetConfig(**cfg_dict)
    return [generate_run(cfg.environment, cfg.init_mode, cfg.control, s, cfg.num_frames)
            for s in seeds]


def potential_grid(environment: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames and joint positions of a 16×16 grid of resting states, for potential plots.

    pendulum: 256 angles in [-π, π) in row-major order; cartpole: cart in [-1.5, 1.5] ×
    angle in [-π, π); acrobot: shoulder × elbow angles in [-π, π).

    Returns:
        frames (16, 16, 64, 64, 3) uint8 and qpos (16, 16, nq) float64.
    """
    from keycld.tasks import set_state

    env, frame = _task_env(environment)
    env.reset()
    physics = env.physics
    angles = np.linspace(-np.pi, np.pi, GRID_SIZE, endpoint=False)
    if environment == "pendulum":
        qpos = np.linspace(-np.pi, np.pi, GRID_SIZE ** 2, endpoint=False).reshape(GRID_SIZE, GRID_SIZE, 1)
    else:
        first = np.linspace(-1.5, 1.5, GRID_SIZE) if environment == "cartpole" else angles
        qpos = np.stack(np.meshgrid(first, angles, indexing="ij"), axis=-1)
    frames = np.empty((GRID_SIZE, GRID_SIZE, 64, 64, 3), np.uint8)
    for i in range(GRID_SIZE):
        for j in range(GRID_SIZE):
            set_state(physics, qpos[i, j], np.zeros(physics.model.nv))
            frames[i, j] = frame()
    return frames, qpos


def generate(cfg: DatasetConfig, workers: int | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """Generate the arrays of a dataset, in parallel across ``workers`` processes.

    The result does not depend on ``workers``: every run owns its RandomState.
    """
    from tqdm.auto import tqdm

    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.num_runs))
    chunk = 2  # small chunks keep both processes busy to the end; per-chunk overhead is tiny
    chunks = [seeds[i:i + chunk] for i in range(0, len(seeds), chunk)]
    results: list[list[dict]] = [None] * len(chunks)  # type: ignore[list-item]
    bar = tqdm(total=cfg.num_runs, desc=f"generating {cfg.name}", unit="run", disable=not progress)
    if workers == 1:
        for k, c in enumerate(chunks):
            results[k] = _generate_chunk(cfg.to_dict(), c)
            bar.update(len(c))
        grid = potential_grid(cfg.environment)
    else:
        ctx = multiprocessing.get_context("spawn")  # no EGL context is inherited through fork
        with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            grid_future = pool.submit(potential_grid, cfg.environment)
            futures = {pool.submit(_generate_chunk, cfg.to_dict(), c): k for k, c in enumerate(chunks)}
            for fut in cf.as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(len(chunks[futures[fut]]))
            grid = grid_future.result()
    bar.close()
    runs = [r for chunk_runs in results for r in chunk_runs]
    arrays = {k: np.stack([r[k] for r in runs]) for k in ("frames", "qpos", "qvel", "time", "action")}
    arrays["seed"] = np.asarray(seeds, np.int64)
    arrays["grid_frames"], arrays["grid_qpos"] = grid
    n_train = cfg.num_runs - cfg.num_val
    arrays["epsilon"] = np.float64(vpt_epsilon(arrays["frames"][:max(n_train, 1)]))
    return arrays


def vpt_epsilon(frames: np.ndarray, chunk: int = 32) -> float:
    """VPT threshold: mean squared error of the mean image against every frame.

    Args:
        frames: (R, T, 64, 64, 3) uint8 (values scaled to [0, 1] here).
    """
    n = frames.shape[0] * frames.shape[1]
    flat = frames.reshape(n, -1)
    mean = np.zeros(flat.shape[1])
    for i in range(0, n, chunk * 50):
        mean += flat[i:i + chunk * 50].sum(0, dtype=np.float64)
    mean /= n * 255.0
    sq = 0.0
    for i in range(0, n, chunk * 50):
        d = flat[i:i + chunk * 50] / 255.0 - mean
        sq += float(np.square(d).sum())
    return sq / flat.size


def background_image(frames: np.ndarray, max_frames: int = 1024) -> np.ndarray:
    """The static background: the per-pixel median of up to ``max_frames`` frames spread evenly
    over all runs and times.

    Args:
        frames: (R, T, 64, 64, 3) uint8.
    Returns:
        (64, 64, 3) float32 in [0, 1].
    """
    if frames.ndim != 5 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (runs, time, height, width, 3), got {frames.dtype} {frames.shape}")
    flat = frames.reshape(-1, *frames.shape[2:])
    pick = np.linspace(0, flat.shape[0] - 1, min(max_frames, flat.shape[0])).round().astype(np.int64)
    return (np.median(flat[pick], axis=0) / 255.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------
RENDERERS = ("dm_control", "mujoco")  # the distributions whose versions a cache entry records


def renderer_versions() -> dict[str, str]:
    """The installed versions of the distributions that render the frames (``RENDERERS``)."""
    return {name: metadata.version(name) for name in RENDERERS}


def write_cache(directory: Path, cfg: DatasetConfig, arrays: dict[str, np.ndarray]) -> None:
    """Write ``data.npz`` then ``manifest.json`` (with the npz hash and the renderer versions)
    atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    npz = directory / "data.npz"
    atomic_write(npz, lambda f: np.savez_compressed(f, **arrays))
    manifest = dict(format=FORMAT_VERSION, config=cfg.to_dict(), sha256=sha256(npz),
                    epsilon=float(arrays["epsilon"]), **renderer_versions())
    write_json(directory / "manifest.json", manifest)


class CacheError(Exception):
    """A cache entry is missing, corrupt, does not match its manifest or was rendered with other
    dm_control/mujoco versions."""


def _check_renderers(man: Path, manifest: dict) -> None:
    """Raise CacheError naming both versions unless ``manifest`` records the installed ones."""
    installed = renderer_versions()
    recorded = {name: manifest.get(name) for name in RENDERERS}
    if recorded != installed:
        def show(versions: dict) -> str:
            return ", ".join(f"{name} {versions[name] or '(not recorded)'}" for name in RENDERERS)
        raise CacheError(f"{man}: frames rendered with {show(recorded)}; installed are {show(installed)} "
                         "(other renderer versions may give other pixels)")


def read_cache(directory: Path, cfg: DatasetConfig) -> dict[str, np.ndarray]:
    """Load a verified cache entry; raise CacheError (naming the path) if it does not check out."""
    npz, man = directory / "data.npz", directory / "manifest.json"
    if not npz.exists() or not man.exists():
        raise CacheError(f"no complete cache at {directory}")
    try:
        manifest = json.loads(man.read_text())
    except (OSError, ValueError) as err:
        raise CacheError(f"unreadable manifest {man}: {err}") from None
    if manifest.get("format") != FORMAT_VERSION or manifest.get("config") != cfg.to_dict():
        raise CacheError(f"manifest {man} does not match the requested dataset")
    _check_renderers(man, manifest)
    if sha256(npz) != manifest.get("sha256"):
        raise CacheError(f"content hash mismatch for {npz} (corrupt or truncated)")
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # zipfile/zlib/ValueError on damaged files
        raise CacheError(f"failed to load {npz}: {err}") from None
    return arrays


@dataclasses.dataclass
class Dataset:
    """A loaded dataset. Frames stay uint8 in memory; ``float_frames`` scales to [0, 1].

    Attributes:
        frames: (R, T, 64, 64, 3) uint8.
        action: (R, A) the constant action of each run, or (R, T, A) with ``action[:, t]`` held
            from frame t to t+1 (data units: ``System.action_scale`` × the env's [-1, 1]).
        epsilon: VPT threshold (pixel MSE of the mean training image).
        dt: seconds between frames.
        num_val: the last ``num_val`` runs are the validation split.
        source: where the runs came from (a cache entry name or an npz path).
        config: the generation parameters of a paper dataset (None for user runs).
        qpos, qvel: (R, T, nq) float64 ground truth (paper datasets; angles in rad, cart in m).
        time: (R, T) seconds since reset; seed: (R,) per-run seeds (paper datasets).
        grid_frames: (16, 16, 64, 64, 3) uint8, grid_qpos: (16, 16, nq) resting-state grid
            (paper datasets).
    """

    frames: np.ndarray
    action: np.ndarray
    epsilon: float
    dt: float
    num_val: int
    source: str
    config: DatasetConfig | None = None
    qpos: np.ndarray | None = None
    qvel: np.ndarray | None = None
    time: np.ndarray | None = None
    seed: np.ndarray | None = None
    grid_frames: np.ndarray | None = None
    grid_qpos: np.ndarray | None = None

    def split(self, name: str) -> "Dataset":
        """The ``"train"`` (first runs) or ``"val"`` (last ``num_val`` runs) split, or ``"all"``."""
        n = self.frames.shape[0]
        if name == "train":
            sl = slice(0, n - self.num_val)
        elif name == "val":
            sl = slice(n - self.num_val, n)
        elif name == "all":
            sl = slice(0, n)
        else:
            raise ValueError(f"unknown split {name!r}; allowed: train, val, all")
        per_run = {k: getattr(self, k)[sl] for k in ("frames", "action", "qpos", "qvel", "time", "seed")
                   if getattr(self, k) is not None}
        return dataclasses.replace(self, num_val=self.num_val if name == "val" else 0, **per_run)

    def __len__(self) -> int:
        return self.frames.shape[0]

    @staticmethod
    def float_frames(frames: np.ndarray) -> np.ndarray:
        """uint8 frames -> float32 in [0, 1]."""
        return frames.astype(np.float32) / 255.0


def _from_arrays(cfg: DatasetConfig, arrays: dict[str, np.ndarray]) -> Dataset:
    return Dataset(frames=arrays["frames"], action=arrays["action"], epsilon=float(arrays["epsilon"]),
                   dt=TASK_SPECS[cfg.environment].dt, num_val=cfg.num_val, source=cfg.name, config=cfg,
                   **{k: arrays[k] for k in ("qpos", "qvel", "time", "seed", "grid_frames", "grid_qpos")})


def _lock_file(root: Path, cfg: DatasetConfig) -> Path:
    """The lock file that serialises generating ``cfg`` in the cache directory ``root``."""
    return root / f".{cfg.name}.lock"


def load_dataset(cfg: DatasetConfig, cache_dir: str | os.PathLike | None = None,
                 workers: int | None = None, progress: bool = True) -> Dataset:
    """Load ``cfg`` from the cache, generating (and caching) it first if needed.

    Concurrent callers serialise on a lock file, so two processes asking for the same dataset
    generate it once and both get the same valid cache. A corrupt entry, or one rendered with
    other dm_control/mujoco versions, is reported with its path (a ``UserWarning``; for versions,
    both the recorded and the installed ones) and regenerated.
    """
    root = check_cache_dir(cache_dir)
    directory = root / cfg.name
    try:
        return _from_arrays(cfg, read_cache(directory, cfg))
    except CacheError as err:
        if (directory / "manifest.json").exists() or (directory / "data.npz").exists():
            warnings.warn(f"regenerating dataset: {err}", stacklevel=2)
    with locked(_lock_file(root, cfg), what=f"dataset {cfg.name}"):
        try:
            return _from_arrays(cfg, read_cache(directory, cfg))
        except CacheError:
            pass
        arrays = generate(cfg, workers=workers, progress=progress)
        write_cache(directory, cfg, arrays)
    return _from_arrays(cfg, arrays)


# ---------------------------------------------------------------------------------------------
# Your own runs: an npz of frames and actions
# ---------------------------------------------------------------------------------------------
MIN_RUNS = 2  # at least one training and one validation run
MIN_FRAMES = 3  # central differences


def num_val_runs(num_runs: int) -> int:
    """Validation runs of a dataset of ``num_runs``: the last tenth, at least 1 (0 for one run)."""
    return max(1, num_runs // 10) if num_runs > 1 else 0


def check_runs(frames: np.ndarray, actions: np.ndarray, action_dim: int, where: str = "runs") -> None:
    """Raise ValueError (naming ``where``, the array and what is allowed) unless ``frames`` is
    uint8 (N, T, 64, 64, 3) with N >= 2, T >= 3 and ``actions`` finite floats (N, A) or
    (N, T, A) with A = ``action_dim``."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(f"{where}: 'frames' must be uint8, got {getattr(frames, 'dtype', type(frames).__name__)}")
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"{where}: 'frames' must have shape (N, T, 64, 64, 3), got {frames.shape}")
    if frames.shape[2:4] != (64, 64):
        raise ValueError(f"{where}: images must be 64×64, got {frames.shape[2]}×{frames.shape[3]} "
                         "(resize your frames to 64×64 RGB)")
    n, t = frames.shape[:2]
    if n < MIN_RUNS:
        raise ValueError(f"{where}: {n} run(s); at least {MIN_RUNS} are needed (the last tenth, at least one, "
                         "validates)")
    if t < MIN_FRAMES:
        raise ValueError(f"{where}: {t} frames per run; at least {MIN_FRAMES} are needed")
    if not isinstance(actions, np.ndarray) or actions.dtype.kind != "f":
        raise ValueError(f"{where}: 'actions' must be float32 (or float64), got "
                         f"{getattr(actions, 'dtype', type(actions).__name__)}")
    if actions.shape not in ((n, action_dim), (n, t, action_dim)):
        width = actions.shape[-1] if actions.ndim else None
        hint = (f"; the system has action_dim = {action_dim}, the data {width}"
                if actions.ndim in (2, 3) and actions.shape[:actions.ndim - 1] in ((n,), (n, t)) else "")
        raise ValueError(f"{where}: 'actions' must have shape (N, A) = {(n, action_dim)} or (N, T, A) = "
                         f"{(n, t, action_dim)}, got {actions.shape}{hint}")
    bad = ~np.isfinite(actions)
    if bad.any():
        run = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{where}: 'actions' holds {int(bad.sum())} NaN/inf values (first in run {run})")


def load_runs(path: str | os.PathLike, system, expected_sha256: str | None = None) -> Dataset:
    """A Dataset from an npz of your own runs: ``frames`` uint8 (N, T, 64, 64, 3) and ``actions``
    float32 (N, A) (constant per run) or (N, T, A) (``actions[:, t]`` held from frame t to t+1),
    in data units (``system.action_scale`` maps the env's ±1 to them).

    The last ``num_val_runs(N)`` runs validate; ε is computed from the training runs as for the
    paper's datasets. ``expected_sha256``: refuse a file whose content changed (a run records it).
    Every check runs before any work and raises ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise ValueError(f"data file {str(path)!r} has changed since the run recorded it (SHA-256 differs); "
                         "pass the original file")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"frames", "actions"} - set(z.files)
            if missing:
                raise ValueError(f"data file {str(path)!r} lacks {sorted(missing)}; it holds {sorted(z.files)} "
                                 "(needed: frames uint8 (N, T, 64, 64, 3), actions float32 (N, A) or (N, T, A))")
            frames, actions = z["frames"], z["actions"]
    except ValueError:
        raise
    except Exception as err:  # not a zip, truncated, pickled objects
        raise ValueError(f"data file {str(path)!r} is not a readable npz: {type(err).__name__}: {err}") from None
    check_runs(frames, actions, system.action_dim, where=str(path))
    num_val = num_val_runs(frames.shape[0])
    eps = vpt_epsilon(frames[: frames.shape[0] - num_val])
    return Dataset(frames=frames, action=actions.astype(np.float32), epsilon=eps, dt=system.dt, num_val=num_val,
                   source=str(path))


__all__ = ["DatasetConfig", "Dataset", "load_dataset", "load_runs", "check_runs", "generate", "generate_run", "default_cache_dir",
           "vpt_epsilon", "potential_grid", "ENVIRONMENTS", "INIT_MODES", "CONTROLS", "CacheError"]
