"""The model zoo: export a trained run as a small, versioned model directory the envs load.

An exported model directory (``keycld_gym/models/<system>/`` for the shipped ones; the files
are listed in :mod:`keycld.rundir`) holds the config, the System's spec file (your own
systems), the weights, the reset bank (encoded initial states, keyed by the weights' SHA-256),
the VPT files and metrics of the run, ``model.json`` (format version, provenance, hardware,
the model kind and the weights' SHA-256, checked whenever the model loads) and ``MODEL_CARD.md``.

``keycld export RUN_DIR [--out DIR]`` writes one (atomically: a temporary folder renamed).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

from keycld import fileio, rundir
from keycld_gym.loading import BANK_FILE, DEFAULT_BANK_SIZE, MODELS_DIR

FORMAT_VERSION = 1
MAX_BYTES = 10 * 2 ** 20
BANK_SIZE = DEFAULT_BANK_SIZE


def hardware_description() -> str:
    """'N-core CPU (model), jax backend' of this machine."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core {cpu}; jax {jax.__version__} on {jax.default_backend()}"


def _trained_on(metrics: list[dict]) -> str | None:
    """The devices a run's epochs recorded (``metrics.jsonl`` field ``device``), in order of use."""
    devices = list(dict.fromkeys(m["device"] for m in metrics if m.get("device")))
    return " then ".join(devices) or None


def _vpt_line(v: dict | None) -> str:
    if v is None:
        return "not measured"
    return f"{v['mean']:.2f} ± {v['std']:.2f} (median {v['median']:.1f}, {v['n']} sequences)"


def model_card(info: dict, cfg: dict, vpt: dict | None, heldout: dict | None) -> str:
    """MODEL_CARD.md text from model.json's ``info``, the config and the VPT files."""
    keys = ("model", "num_hidden_dim", "batch_size", "learning_rate", "dynamics_lr_factor", "dynamics_weight",
            "bce_weight", "constraint_weight", "solver", "num_predicted_steps", "num_epochs", "refine_epochs",
            "refine_num_predicted_steps", "refine_dynamics_lr_factor", "refine_when", "localised_ratio",
            "warmup_epochs", "warmup_sigma", "warmup_foreground_weight", "sigma", "seed", "init_from")
    hyper = ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)  # older configs lack the newer keys
    wall = info.get("training_wall_time_s")
    wall_text = f"{wall / 60:.0f} min" if wall else "not recorded"
    ratio = ""
    if vpt and heldout and vpt["mean"] > 0:
        ratio = f"\nHeld-out / validation VPT ratio: {heldout['mean'] / vpt['mean']:.2f}.\n"
    n_val = max(1, cfg["num_runs"] // 10)
    if cfg.get("data"):
        dataset = (f"your runs `{cfg['data']}` (SHA-256 {str(cfg.get('data_sha256'))[:12]}…), {cfg['num_runs']} runs × "
                   f"{cfg['num_frames']} frames ({cfg['num_runs'] - n_val} train / {n_val} validation); System "
                   f"`{cfg.get('system_attr')}` in `system.py`")
    else:
        dataset = (f"{cfg['environment']}, init `{cfg['init_mode']}`, control `{cfg['control']}`, {cfg['num_runs']} runs × "
                   f"{cfg['num_frames']} frames ({cfg['num_runs'] - n_val} train / {n_val} validation)")
    heldout_row = "" if cfg.get("data") else f"\n| VPT, held-out seeds 1000–1049 | {_vpt_line(heldout)} |"
    return f"""# KeyCLD model card: {cfg['environment']}

| | |
|---|---|
| dataset | {dataset} |
| hyperparameters | {hyper} (preset `{cfg.get('preset')}`) |
| epochs trained | {info.get('epochs')} |
| weights | {_weights_line(info.get('weights'), info.get('epochs'))} |
| training wall time | {wall_text} |
| hardware | {info.get('hardware')} |
| VPT, validation runs | {_vpt_line(vpt)} |{heldout_row}
| model version | {info.get('model_version')} |
| weights SHA-256 | `{info.get('weights_sha256')}` |
| integration | RK4, {info.get('substeps')} sub-step(s) per control step (largest keypoint deviation from 16 sub-steps over 50 steps: {info.get('substeps_error', float('nan')):.1e} image units, median over 256 rollouts) |
| source run | `{info.get('source_run')}` |
| exported | {info.get('exported_at')} (format {info.get('format_version')}) |
{ratio}
VPT (valid prediction time, frames of 48): open-loop video prediction from the first three
frames until the per-frame MSE first exceeds the dataset's ε. Commands:
`keycld evaluate RUN_DIR` (and, for the paper's tasks, `keycld evaluate RUN_DIR --split heldout`).

{info.get('notes') or ''}
"""


def _weights_line(origin: dict | None, epochs) -> str:
    """The model card's description of which epoch's weights an export holds."""
    if not origin or origin.get("epoch") is None:
        return "not recorded"
    vpt = origin.get("val_vpt_mean")
    at = f" (validation VPT {vpt:.2f} at that epoch)" if vpt is not None else ""
    kind = "best validation epoch" if origin.get("weights") == "best" else "last epoch"
    return f"{kind}, epoch {origin['epoch']} of {epochs}{at}"


def integration_choice(run_dir: str | os.PathLike) -> dict:
    """``{"substeps", "substeps_error"}``: the fewest RK4 sub-steps per control step whose rollouts
    stay within ``SUBSTEP_TOL`` of 16 sub-steps (:func:`keycld_gym.functional.choose_substeps`),
    measured on the model in ``run_dir`` from its reset bank, and that error (image units)."""
    from keycld_gym.functional import choose_substeps
    from keycld_gym.loading import load_env_params

    params, _ = load_env_params(checkpoint=run_dir, substeps=1)
    substeps, errors = choose_substeps(params)
    return {"substeps": substeps, "substeps_error": errors[substeps]}


def export(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, hardware: str | None = None,
           notes: str = "", bank_size: int = BANK_SIZE, model_version: int = 0, weights: str = "best") -> Path:
    """Export ``run_dir`` to ``out``; returns ``out``.

    ``weights``: the run's best validation epoch (default; the last epoch's when no epoch was
    validated) or its last epoch (``keycld.rundir.weights_file``); ``model.json`` and the model
    card record which epoch. VPT files of the run that evaluated other weights are left out.

    ``model_version`` is recorded in ``model.json`` and the model card (the shipped models' ids
    carry it: ``KeyCLD-<Name>-v<model_version>``). The number of integrator sub-steps the
    environments use by default is measured here (:func:`integration_choice`).

    Default ``out``: ``keycld_gym/models/<system>`` (the shipped model) for the paper's tasks,
    ``models/<name>`` under the current directory for your own system. The reset bank is built
    here (the paper's tasks: ``bank_size`` real resets; your own system: the first frames of
    every training run, from the run's data), so loading the export only reads files.
    """
    from keycld import checkpoint
    from keycld.data import load_runs
    from keycld_gym.loading import build_data_bank, load_bank, save_bank, stamp_bank

    run_dir = Path(run_dir)
    if not rundir.is_run(run_dir):
        raise ValueError(f"{run_dir} is not a run directory (needs {rundir.CONFIG} and {rundir.CHECKPOINT} or "
                         f"{rundir.PARAMS})")
    if isinstance(model_version, bool) or not isinstance(model_version, int) or model_version < 0:
        raise ValueError(f"model_version must be an integer >= 0, got {model_version!r}")
    rundir.check_weights_choice(weights)
    origin = rundir.weights_origin(run_dir, weights)
    model, params, cfg = rundir.load_model(run_dir, weights)
    if out is None:
        out = Path("models") / cfg.environment if cfg.user_data else MODELS_DIR / cfg.environment
    out = Path(out)
    if out.resolve() == run_dir.resolve():
        raise ValueError(f"--out {out} is the run directory itself; export to another directory")
    rundir.check_writable_dir(out)
    if out.exists() and any(out.iterdir()) and not rundir.is_export(out):
        raise ValueError(f"--out {out} is a directory that holds no exported model; an export replaces its "
                         "directory, so give a new or empty one (or an exported model to update)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        cfg.save(tmp / rundir.CONFIG)
        checkpoint.save(tmp / rundir.PARAMS, params)
        digest = fileio.sha256(tmp / rundir.PARAMS)
        rundir.copy_into_export(run_dir, tmp, origin)
        if cfg.user_data:
            bank = build_data_bank(model, params, load_runs(cfg.data, model.system, cfg.data_sha256))
            save_bank(tmp / BANK_FILE, stamp_bank(bank, digest))
            bank_size = len(bank["states"])
        else:
            load_bank(tmp, model, params, bank_size, cfg=cfg)
        metrics = rundir.read_metrics(run_dir)
        info = {"format_version": FORMAT_VERSION, "system": cfg.environment,
                "source_run": str(run_dir), "exported_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "hardware": hardware or _trained_on(metrics) or hardware_description(),
                "epochs": metrics[-1]["epoch"] if metrics else None,
                "training_wall_time_s": metrics[-1].get("wall_time_s") if metrics else None,
                "weights": origin, "bank_size": bank_size, "model": cfg.model, "model_version": model_version,
                "weights_sha256": digest, **integration_choice(tmp), "notes": notes}
        fileio.write_json(tmp / rundir.MODEL_INFO, info)
        read = lambda n: json.loads((tmp / n).read_text()) if (tmp / n).exists() else None  # noqa: E731
        fileio.write_text(tmp / rundir.MODEL_CARD, model_card(info, cfg.to_dict(), read(rundir.VPT),
                                                              read(rundir.vpt_file("heldout"))))
        size = sum(f.stat().st_size for f in tmp.iterdir())
        if size > MAX_BYTES:
            raise ValueError(f"exported model is {size / 2 ** 20:.1f} MB; the limit is {MAX_BYTES / 2 ** 20:.0f} MB")
        if out.exists():
            old = out.with_name(f".{out.name}.old{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def cmd_export(args, parser) -> int:
    try:
        out = export(args.run_dir, args.out, args.hardware, args.notes, model_version=args.model_version,
                     weights=args.weights)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a trained run as a small model directory (the model zoo)")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="default: keycld_gym/models/<system> (the shipped model) for the "
                                               "paper's tasks, models/<name> for your own system")
    p.add_argument("--hardware", default=None, help="hardware the run trained on (default: this machine)")
    p.add_argument("--notes", default="", help="free text for the model card (budget caveats)")
    p.add_argument("--model_version", type=int, default=0,
                   help="version recorded in model.json and the model card (a replaced shipped model gets the next)")
    p.add_argument("--weights", choices=rundir.WEIGHTS, default="best",
                   help="the run's best validation epoch (default) or its last epoch")
    p.set_defaults(func=cmd_export, parser=p)


__all__ = ["export", "model_card", "BANK_FILE", "FORMAT_VERSION"]
