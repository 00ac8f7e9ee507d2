"""The model zoo: export a trained run as a small, versioned model directory the envs load.

An exported model directory (``keycld_gym/models/<system>/`` for the shipped ones) holds

    config.json        the TrainConfig of the run
    params.msgpack     the weights only (Flax msgpack; no optimiser state)
    reset_bank.npz     the bank of encoded initial states (keyed by the weights' SHA-256)
    vpt.json           VPT on the 50 validation runs; vpt_heldout.json on seeds 1000–1049
    metrics.jsonl      the run's per-epoch metrics
    init_from.json     for a fine-tuned run: the budget of the run it started from
    model.json         format version, source run, hardware, training wall time, notes
    MODEL_CARD.md      the same facts for people

``keycld export RUN_DIR [--out DIR]`` writes one (atomically: a temporary folder renamed).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

from keycld_gym.loading import BANK_FILE, MODELS_DIR

FORMAT_VERSION = 1
MAX_BYTES = 10 * 2 ** 20
BANK_SIZE = 64


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


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
            "refine_num_predicted_steps", "refine_dynamics_lr_factor", "sigma", "seed", "init_from")
    hyper = ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)  # older configs lack the newer keys
    wall = info.get("training_wall_time_s")
    wall_text = f"{wall / 60:.0f} min" if wall else "not recorded"
    ratio = ""
    if vpt and heldout and vpt["mean"] > 0:
        ratio = f"\nHeld-out / validation VPT ratio: {heldout['mean'] / vpt['mean']:.2f}.\n"
    return f"""# KeyCLD model card: {cfg['environment']}

| | |
|---|---|
| dataset | {cfg['environment']}, init `{cfg['init_mode']}`, control `{cfg['control']}`, {cfg['num_runs']} runs × {cfg['num_frames']} frames (450 train / 50 validation) |
| hyperparameters | {hyper} (preset `{cfg.get('preset')}`) |
| epochs trained | {info.get('epochs')} |
| training wall time | {wall_text} |
| hardware | {info.get('hardware')} |
| VPT, validation runs 450–499 | {_vpt_line(vpt)} |
| VPT, held-out seeds 1000–1049 | {_vpt_line(heldout)} |
| source run | `{info.get('source_run')}` |
| exported | {info.get('exported_at')} (format {info.get('format_version')}) |
{ratio}
VPT (valid prediction time, frames of 48): open-loop video prediction from the first three
frames until the per-frame MSE first exceeds the dataset's ε. Commands:
`keycld evaluate RUN_DIR` and `keycld evaluate RUN_DIR --split heldout`.

{info.get('notes') or ''}
"""


def export(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, hardware: str | None = None,
           notes: str = "", bank_size: int = BANK_SIZE) -> Path:
    """Export ``run_dir`` to ``out`` (default ``keycld_gym/models/<system>``); returns ``out``."""
    from keycld import checkpoint
    from keycld.config import TrainConfig
    from keycld.train import load_model
    from keycld.vpt_table import INIT_FROM_FILE
    from keycld_gym.loading import load_bank

    run_dir = Path(run_dir)
    cfg = TrainConfig.load(run_dir / "config.json")
    model, weights, _ = load_model(run_dir)
    out = Path(out) if out is not None else MODELS_DIR / cfg.environment
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        cfg.save(tmp / "config.json")
        checkpoint.save(tmp / checkpoint.PARAMS, weights)
        for name in ("vpt.json", "vpt_heldout.json", "metrics.jsonl", INIT_FROM_FILE):
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, tmp / name)
        load_bank(tmp, cfg.environment, model, weights, bank_size)
        metrics = _metrics(run_dir)
        info = {"format_version": FORMAT_VERSION, "system": cfg.environment,
                "source_run": str(run_dir), "exported_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "hardware": hardware or _trained_on(metrics) or hardware_description(),
                "epochs": metrics[-1]["epoch"] if metrics else None,
                "training_wall_time_s": metrics[-1].get("wall_time_s") if metrics else None,
                "bank_size": bank_size, "notes": notes}
        (tmp / "model.json").write_text(json.dumps(info, indent=1))
        read = lambda n: json.loads((tmp / n).read_text()) if (tmp / n).exists() else None  # noqa: E731
        (tmp / "MODEL_CARD.md").write_text(model_card(info, cfg.to_dict(), read("vpt.json"),
                                                      read("vpt_heldout.json")))
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


def register(sub) -> None:
    p = sub.add_parser("export", help="export a trained run as a small model directory (the model zoo)")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="default: keycld_gym/models/<system> (the shipped model)")
    p.add_argument("--hardware", default=None, help="hardware the run trained on (default: this machine)")
    p.add_argument("--notes", default="", help="free text for the model card (budget caveats)")
    p.set_defaults(func=lambda args, parser: print(f"wrote {export(args.run_dir, args.out, args.hardware, args.notes)}")
                   or 0, parser=p)


__all__ = ["export", "model_card", "BANK_FILE", "FORMAT_VERSION"]
