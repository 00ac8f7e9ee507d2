"""The run-directory and exported-model format: file names, what each holds, how to load them.

This module is the one owner of the format; everything else reads and writes run directories
through these names and functions.

A **run directory** (``keycld train``)::

    config.json           TrainConfig (keycld.config)
    system.py             your own System's spec file, copied at the start (user systems only)
    checkpoint.msgpack    params + optimiser state + counters after the last complete epoch, the model kind
    best.msgpack          params of the epoch with the best validation VPT so far, that epoch and VPT
    metrics.jsonl         one line per epoch (train loss terms, validation VPT, wall time, device,
                          conv backend)
    vpt.json              validation VPT (``vpt_<split>.json`` for other splits)
    init_from.json        the budget of the run a fine-tuned run started from
    potential.png         the learned potential landscape (``keycld evaluate``)
    gifs/epoch_XXX.gif    ground truth | keypoint heatmaps | Gaussian maps | prediction
    .lock                 held while a process trains in the directory

An **exported model** (``keycld export``) holds ``config.json``, ``system.py`` (user systems),
``params.msgpack`` (weights only), ``reset_bank.npz`` (encoded initial states for the
environments), the VPT files, ``metrics.jsonl``, ``init_from.json``, ``model.json`` (format
version, provenance, the model kind and the weights' SHA-256, both checked on load) and ``MODEL_CARD.md``.

**Which weights.** A run directory holds two sets: the last epoch's (``checkpoint.msgpack``,
what ``--resume`` continues) and the best validation epoch's (``best.msgpack``). Loading a run
(evaluation, export, environments, ``--init_from``) takes ``weights="best"`` by default, which
falls back to the last epoch's when no epoch was validated; ``weights="last"`` takes the last.
An export holds one set, the one it was exported from (``model.json``'s ``weights`` says which).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax

from keycld import checkpoint, fileio
from keycld.config import TrainConfig
from keycld.model.keycld import KeyCLD
from keycld.system import System, load_system_file

CONFIG = "config.json"
SYSTEM_SPEC = "system.py"
CHECKPOINT = "checkpoint.msgpack"
BEST = "best.msgpack"
WEIGHTS = ("best", "last")  # which of a run's weights to load (see the module docstring)
PARAMS = "params.msgpack"
METRICS = "metrics.jsonl"
VPT = "vpt.json"
INIT_FROM = "init_from.json"
POTENTIAL = "potential.png"
GIFS = "gifs"
LOCK = ".lock"
BANK = "reset_bank.npz"
MODEL_INFO = "model.json"
MODEL_CARD = "MODEL_CARD.md"
# what an export copies from its run directory when present
EXPORT_COPIED = (VPT, "vpt_heldout.json", METRICS, INIT_FROM)


def vpt_file(split: str) -> str:
    """``vpt.json`` for the validation split, ``vpt_<split>.json`` otherwise."""
    return VPT if split == "val" else f"vpt_{split}.json"


def gif_file(epoch: int) -> str:
    return f"{GIFS}/epoch_{epoch:03d}.gif"


def is_run(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a config and weights (a run or an exported model)."""
    path = Path(path)
    return (path / CONFIG).is_file() and ((path / CHECKPOINT).is_file() or (path / PARAMS).is_file())


def is_export(path: str | os.PathLike) -> bool:
    """True when ``path`` holds an exported model's weights or ``model.json`` (never resumed or
    trained into)."""
    path = Path(path)
    return (path / PARAMS).exists() or (path / MODEL_INFO).exists()


# ---- checks before a command writes into a directory -------------------------------------------
# what a run killed before its first checkpoint may hold (``wandb``: the Weights & Biases logs)
UNSTARTED_RUN = (CONFIG, SYSTEM_SPEC, INIT_FROM, METRICS, GIFS, "wandb")


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> None:
    """ValueError unless ``path`` is a directory this process may write in, or a path whose
    nearest existing ancestor is one (so it can be created)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a directory")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{what} {path} lies under {ancestor}, which is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: no permission to write in {ancestor}")


def config_differences(saved: TrainConfig, other: TrainConfig) -> list[str]:
    """'field: saved -> other' for every field in which the two configurations differ."""
    a, b = saved.to_dict(), other.to_dict()
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]


def _entries(run_dir: Path) -> set[str]:
    """The names in ``run_dir`` other than the lock file and temporaries (``.NAME.*.tmp``)."""
    return {p.name for p in run_dir.iterdir()
            if p.name != LOCK and not (p.name.startswith(".") and p.name.endswith(".tmp"))}


def check_new_run(run_dir: str | os.PathLike, cfg: TrainConfig) -> None:
    """Raise (FileExistsError, or ValueError for a path that cannot be a directory) unless a run
    of ``cfg`` may start in ``run_dir``: it does not exist, is empty, or holds an unstarted run
    (killed before its first checkpoint, ``UNSTARTED_RUN``) of the same configuration."""
    check_writable_dir(run_dir)
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    names = _entries(run_dir)
    if CHECKPOINT in names:
        raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} to continue it, or choose "
                              "another --out")
    if is_export(run_dir):
        raise FileExistsError(f"{run_dir} holds an exported model; train into another --out (to start from its "
                              f"weights: --init_from {run_dir})")
    if not names:
        return
    if CONFIG in names and names <= set(UNSTARTED_RUN):
        diff = config_differences(load_config(run_dir), cfg)
        if not diff:
            return
        raise FileExistsError(f"{run_dir} holds an unstarted run of another configuration ({'; '.join(diff)}); "
                              "choose another --out")
    raise FileExistsError(f"{run_dir} is not empty and holds no run of this configuration (it holds "
                          f"{', '.join(sorted(names))}); choose a new or empty --out")


def check_resumable(run_dir: str | os.PathLike) -> TrainConfig:
    """The saved TrainConfig of a training run ``run_dir`` that ``--resume`` may continue;
    FileNotFoundError / ValueError naming the directory otherwise (e.g. an exported model)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no such directory)")
    cfg = load_config(run_dir)
    if not (run_dir / CHECKPOINT).is_file() and is_export(run_dir):
        raise ValueError(f"{run_dir} is an exported model (weights only, no optimiser state) and cannot be resumed; "
                         f"fine-tune it in a new run instead: keycld train ... --init_from {run_dir} --out NEW_DIR")
    check_writable_dir(run_dir, "--resume")
    return cfg


# ---- reading ------------------------------------------------------------------------------------
def read_json(path: Path):
    return json.loads(Path(path).read_text())


def load_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The TrainConfig of a run or exported model; ValueError naming the file (and the field)
    when unusable."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {CONFIG})")
    try:
        return TrainConfig.load(path)
    except (ValueError, TypeError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path} is not a valid run configuration: {err}") from None


def load_system(run_dir: str | os.PathLike, cfg: TrainConfig | None = None) -> System:
    """The System a run trains: the built-in one named in its config, or the System in the run's
    own copy of its spec file (``system.py``)."""
    cfg = cfg or load_config(run_dir)
    if not cfg.user_data:
        from keycld import systems
        return systems.get(cfg.environment)
    spec = Path(run_dir) / SYSTEM_SPEC
    if not spec.is_file():
        raise FileNotFoundError(f"{run_dir} trains the System {cfg.environment!r} but holds no {SYSTEM_SPEC}")
    return load_system_spec(spec, cfg)


def load_system_spec(spec: str | os.PathLike, cfg: TrainConfig) -> System:
    """The System ``cfg.system_attr`` of the spec file ``spec``; ValueError unless it is the
    System ``cfg.environment`` names."""
    system, _, _ = load_system_file(f"{spec}:{cfg.system_attr}")
    if system.name != cfg.environment:
        raise ValueError(f"{spec}: {cfg.system_attr} is the System {system.name!r}, the config says "
                         f"{cfg.environment!r}")
    return system


def copy_system_spec(source: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """Copy a System's spec file into ``run_dir`` as ``system.py`` (atomically)."""
    fileio.write_bytes(Path(run_dir) / SYSTEM_SPEC, Path(source).read_bytes())


def check_weights_choice(weights: str) -> None:
    """ValueError unless ``weights`` is one of ``WEIGHTS``."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")


def weights_file(run_dir: str | os.PathLike, weights: str = "best") -> Path:
    """The file holding a run's weights: ``best.msgpack`` (``weights="best"``, when an epoch was
    validated) or ``checkpoint.msgpack`` of a training run, ``params.msgpack`` of an exported
    model (its only set, whatever ``weights`` says)."""
    check_weights_choice(weights)
    run_dir = Path(run_dir)
    names = (BEST, CHECKPOINT, PARAMS) if weights == "best" else (CHECKPOINT, PARAMS)
    for name in names:
        if (run_dir / name).exists():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir} holds no {CHECKPOINT} or {PARAMS}")


_DIGESTS: dict[tuple, str] = {}  # (path, inode, mtime, size) -> SHA-256: each weights file hashed once


def weights_sha256(run_dir: str | os.PathLike, weights: str = "best") -> str:
    """Hex SHA-256 of a run's weights file (``weights_file``), computed once per version of the file."""
    path = weights_file(run_dir, weights).resolve()
    st = path.stat()
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _DIGESTS:
        _DIGESTS[key] = fileio.sha256(path)
    return _DIGESTS[key]


def read_model_info(run_dir: str | os.PathLike) -> dict:
    """An exported model's ``model.json`` as a dict (``{}`` for a directory without one);
    ValueError naming the file when it is not a JSON object."""
    info_path = Path(run_dir) / MODEL_INFO
    if not info_path.is_file():
        return {}
    try:
        info = read_json(info_path)
    except ValueError as err:
        raise ValueError(f"{info_path} is not valid JSON: {err}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{info_path} must hold a JSON object, got {type(info).__name__}")
    return info


def read_weights(run_dir: str | os.PathLike, cfg: TrainConfig, weights: str = "best") -> dict:
    """The stored tree of a run's weights file (``weights_file``; ``checkpoint.read_raw``), after
    checking it against what the directory records: an export's ``model.json`` (the weights'
    SHA-256 and the model kind) and a checkpoint's ``model`` entry. ValueError naming the files
    otherwise."""
    run_dir = Path(run_dir)
    path = weights_file(run_dir, weights)
    info_path = run_dir / MODEL_INFO
    info = read_model_info(run_dir)
    recorded = info.get("weights_sha256")
    if recorded is not None:
        digest = weights_sha256(run_dir, weights)
        if recorded != digest:
            raise ValueError(f"{path} is damaged or was replaced: its SHA-256 is {digest}, {info_path} records "
                             f"{recorded}; export the model again (keycld export RUN_DIR)")
    raw = checkpoint.read_raw(path)
    kind = info.get("model", raw.get("model") if path.name in (CHECKPOINT, BEST) else None)
    if kind is not None and kind != cfg.model:
        source = info_path if "model" in info else path
        raise ValueError(f"{run_dir / CONFIG}: field 'model' is {cfg.model!r}, but the weights are of a {kind!r} "
                         f"model ({source}); set \"model\": {json.dumps(kind)}")
    return raw


def restore_params(run_dir: str | os.PathLike, raw: dict, target, cfg: TrainConfig, weights: str = "best"):
    """``target``'s parameter tree filled from ``raw`` (the stored params of ``run_dir``);
    ValueError naming the config's fields when the weights do not fit the model it describes."""
    try:
        return checkpoint.restore(weights_file(run_dir, weights), raw, target)
    except ValueError as err:
        raise ValueError(f"{err}. {Path(run_dir) / CONFIG} describes another model than the weights: check its "
                         f"fields model ({cfg.model!r}), num_hidden_dim ({cfg.num_hidden_dim}) and environment "
                         f"({cfg.environment!r})") from None


def load_model(run_dir: str | os.PathLike, weights: str = "best") -> tuple[KeyCLD, dict, TrainConfig]:
    """(model, params, config) of a trained run directory or an exported model directory; the
    weights (``weights_file``: the best validation epoch's by default) are checked
    (``read_weights``) and must fit the configured model."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    model = KeyCLD.from_config(cfg, load_system(run_dir, cfg))
    target = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    raw = read_weights(run_dir, cfg, weights)
    path = weights_file(run_dir, weights)
    if path.name in (CHECKPOINT, BEST):
        if "params" not in raw:
            raise ValueError(f"checkpoint {path} has no 'params' entry")
        raw = raw["params"]
    return model, restore_params(run_dir, raw, target, cfg, weights), cfg


def weights_origin(run_dir: str | os.PathLike, weights: str = "best") -> dict:
    """Which epoch the weights ``load_model(run_dir, weights)`` loads come from:
    ``{"weights": "best" | "last", "epoch": int | None, "val_vpt_mean": float | None}``.
    For an exported model, what its ``model.json`` records (``{}`` when it records nothing)."""
    path = weights_file(run_dir, weights)
    if path.name == PARAMS:
        return dict(read_model_info(run_dir).get("weights") or {})
    raw = checkpoint.read_raw(path)
    epoch = int(raw["epoch"]) if "epoch" in raw else None
    if path.name == BEST:
        return {"weights": "best", "epoch": epoch, "val_vpt_mean": float(raw["val_vpt_mean"])}
    vpt = next((r.get("val/vpt_mean") for r in read_metrics(run_dir) if r.get("epoch") == epoch), None)
    return {"weights": "last", "epoch": epoch, "val_vpt_mean": vpt}


def weights_record(origin: dict) -> dict:
    """What a VPT file records about the weights it evaluated (``weights_origin``):
    ``{"weights", "epoch_of_weights"}``."""
    return {"weights": origin.get("weights"), "epoch_of_weights": origin.get("epoch")}


def best_epoch(records: list[dict]) -> dict | None:
    """The metrics record with the highest validation VPT mean (the earliest of equal ones);
    None when no record has one."""
    scored = [r for r in records if isinstance(r.get("val/vpt_mean"), (int, float))]
    return max(scored, key=lambda r: (r["val/vpt_mean"], -r["epoch"])) if scored else None


def save_best(run_dir: str | os.PathLike, params, epoch: int, val_vpt_mean: float, model_kind: str) -> None:
    """Write ``best.msgpack``: ``params`` of epoch ``epoch`` with that validation VPT mean."""
    import numpy as np

    checkpoint.save(Path(run_dir) / BEST, {"params": params, "epoch": np.int32(epoch),
                                           "val_vpt_mean": np.float64(val_vpt_mean), "model": model_kind})


def read_best(run_dir: str | os.PathLike) -> dict | None:
    """``{"epoch", "val_vpt_mean"}`` of a run's ``best.msgpack``; None when there is none."""
    path = Path(run_dir) / BEST
    if not path.is_file():
        return None
    raw = checkpoint.read_raw(path)
    return {"epoch": int(raw["epoch"]), "val_vpt_mean": float(raw["val_vpt_mean"])}


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch records of ``metrics.jsonl`` (a line cut short by a kill is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def last_metrics(run_dir: str | os.PathLike) -> dict | None:
    records = read_metrics(run_dir)
    return records[-1] if records else None


def truncate_metrics(run_dir: str | os.PathLike, epochs_done: int) -> None:
    """Drop metric lines of epochs that have no checkpoint (a killed epoch)."""
    path = Path(run_dir) / METRICS
    if path.exists():
        keep = [r for r in read_metrics(run_dir) if r["epoch"] <= epochs_done]
        fileio.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def append_metrics(run_dir: str | os.PathLike, record: dict) -> None:
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---- budgets (fine-tuned runs include their sources') ------------------------------------------
def sum_or_none(a, b):
    """a + b, or None when either is unknown."""
    return None if a is None or b is None else a + b


def run_budget(run_dir: str | os.PathLike) -> dict:
    """What a run directory was trained for, its sources' budgets included (``--init_from``):
    {"source", "epochs", "steps", "wall_time_s"} (None where unknown), from ``metrics.jsonl``
    and the run's own ``init_from.json``. Fine-tuning writes this as the new run's
    ``init_from.json``, so the budget survives when the source directory is gone."""
    run_dir = Path(run_dir)
    last = last_metrics(run_dir) or {}
    budget = {"source": str(run_dir), "epochs": last.get("epoch", 0), "steps": last.get("step"),
              "wall_time_s": last.get("wall_time_s")}
    cfg_path = run_dir / CONFIG
    init_from = read_json(cfg_path).get("init_from") if cfg_path.is_file() else None
    prior = prior_budget(init_from, run_dir)
    if prior is not None:
        budget["epochs"] += prior["epochs"]
        for k in ("steps", "wall_time_s"):
            budget[k] = sum_or_none(budget[k], prior[k])
    return budget


def prior_budget(init_from: str | None, run_dir: Path) -> dict | None:
    """The budget (``run_budget``) of the run a fine-tuned ``run_dir`` started from: its
    ``init_from.json`` if present, else the source directory itself (relative paths: from the
    current directory, the repository root or beside ``run_dir``); None when there is none."""
    if not init_from:
        return None
    run_dir = Path(run_dir)
    if (run_dir / INIT_FROM).is_file():
        return read_json(run_dir / INIT_FROM)
    here = Path(__file__).resolve().parent.parent
    for base in (Path.cwd(), here, run_dir.parent):
        source = base / init_from
        if source.resolve() != run_dir.resolve() and (source / METRICS).is_file():
            return run_budget(source)
    return None


def copy_into_export(run_dir: Path, export_dir: Path, origin: dict | None = None) -> None:
    """Copy the files an export keeps from its run directory (``EXPORT_COPIED``, the spec file);
    a VPT file that records another epoch than ``origin`` (``weights_origin`` of the exported
    weights) stays behind."""
    for name in (*EXPORT_COPIED, SYSTEM_SPEC):
        if not (run_dir / name).exists():
            continue
        if name.startswith("vpt") and origin and origin.get("epoch") is not None:
            recorded = read_json(run_dir / name).get("epoch_of_weights")
            if recorded is not None and recorded != origin["epoch"]:
                continue
        shutil.copy2(run_dir / name, export_dir / name)


__all__ = ["CONFIG", "SYSTEM_SPEC", "CHECKPOINT", "BEST", "WEIGHTS", "PARAMS", "METRICS", "VPT", "INIT_FROM", "POTENTIAL", "GIFS",
           "LOCK", "BANK", "MODEL_INFO", "MODEL_CARD", "vpt_file", "load_config", "load_system", "load_model",
           "weights_origin", "weights_record", "best_epoch", "save_best", "read_best", "read_metrics", "read_model_info", "run_budget", "weights_file", "weights_sha256", "is_run", "is_export", "check_new_run",
           "check_resumable", "check_writable_dir"]
