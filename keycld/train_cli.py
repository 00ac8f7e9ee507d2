"""``keycld train`` and the original README's entry points (keycld/dm.py, ablations/*.py)."""
from __future__ import annotations

import dataclasses

import argparse
import sys
from pathlib import Path

from keycld.config import MODELS, PRESETS, TrainConfig, preset_fields


def _str2bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_train_args(p: argparse.ArgumentParser, model_choice: bool = True) -> None:
    from keycld.cli import positive_int
    from keycld.data import CONTROLS, ENVIRONMENTS, INIT_MODES
    from keycld.model.integrators import SOLVERS

    d = TrainConfig()
    p.add_argument("--environment", choices=ENVIRONMENTS)
    p.add_argument("--init_mode", choices=INIT_MODES, default=None)
    p.add_argument("--control", choices=CONTROLS, default=None)
    if model_choice:
        p.add_argument("--model", choices=MODELS, default=None)
    p.add_argument("--batch_size", type=positive_int, default=None)
    p.add_argument("--dynamics_weight", type=float, default=None)
    p.add_argument("--bce_weight", type=float, default=None)
    p.add_argument("--constraint_weight", type=float, default=None,
                   help="weight of the constraint term, mean Φ² of the encoded keypoints (not in the paper; default 0)")
    p.add_argument("--solver", choices=SOLVERS, default=None)
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--dynamics_lr_factor", type=float, default=None,
                   help=f"the dynamics networks' learning rate / learning_rate (paper {d.dynamics_lr_factor})")
    p.add_argument("--num_epochs", type=positive_int, default=None)
    p.add_argument("--num_hidden_dim", type=positive_int, default=None)
    p.add_argument("--num_predicted_steps", type=positive_int, default=None)
    p.add_argument("--refine_epochs", type=int, default=None,
                   help="the last N epochs train the dynamics with the --refine_* settings (0 = off)")
    p.add_argument("--refine_num_predicted_steps", type=positive_int, default=None,
                   help="num_predicted_steps in the refine epochs")
    p.add_argument("--refine_dynamics_lr_factor", type=float, default=None,
                   help="dynamics_lr_factor in the refine epochs")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num_runs", type=positive_int, default=None, help=f"dataset size (default {d.num_runs})")
    p.add_argument("--num_frames", type=positive_int, default=None, help=f"frames per run (default {d.num_frames})")
    p.add_argument("--max_steps_per_epoch", type=positive_int, default=None)
    p.add_argument("--augment", type=_str2bool, default=None)
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="'paper' = the paper's configuration (default); 'cpu' = h=16, 10 epochs (under 1 h on 2 cores)")
    p.add_argument("--out", default=None, help="run directory (default runs/MODEL-ENV-INIT-CONTROL-sSEED)")
    p.add_argument("--init_from", default=None, metavar="RUN_DIR",
                   help="start from the weights of another run (fine-tuning with new settings)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--wandb", action="store_true", help="log to Weights & Biases (WANDB_MODE=offline works)")
    p.add_argument("--no_gif", action="store_true")
    p.add_argument("--quiet", action="store_true")


def config_from_args(args, parser, model: str | None = None) -> TrainConfig:
    fields = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if getattr(args, k, None) is not None}
    if model is not None:
        fields["model"] = model
    if args.environment is None:
        parser.error("--environment is required (allowed: pendulum, cartpole, acrobot) unless --resume is given")
    preset = preset_fields(args.preset, args.environment) if args.preset else {}
    merged = {**preset, **fields}
    try:
        return TrainConfig(**merged)
    except ValueError as err:
        parser.error(str(err))


def run_train(args, parser, model: str | None = None) -> int:
    from keycld.train import TrainingDiverged, train

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").exists():
            parser.error(f"--resume {run_dir}: not a run directory (no config.json)")
        cfg = TrainConfig.load(run_dir / "config.json")
        if args.num_epochs is not None and args.num_epochs != cfg.num_epochs:
            # extending a finished (or running) schedule: the only setting a resume may change
            if args.num_epochs < cfg.num_epochs:
                parser.error(f"--num_epochs {args.num_epochs} is below the run's {cfg.num_epochs}; "
                             "a resume can only extend the schedule")
            cfg = dataclasses.replace(cfg, num_epochs=args.num_epochs)
            cfg.save(run_dir / "config.json")
        resume = True
    else:
        cfg = config_from_args(args, parser, model)
        run_dir = Path(args.out or f"runs/{cfg.model}-{cfg.environment}-{cfg.init_mode}-{cfg.control}-s{cfg.seed}")
        resume = False
        if (run_dir / "checkpoint.msgpack").exists():
            parser.error(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose --out")
    logger = None
    if args.wandb:
        try:
            import wandb
        except ImportError:
            parser.error("--wandb needs the wandb package: pip install 'keycld-gym[wandb]'")
        wb = wandb.init(project="keycld", config=cfg.to_dict(), dir=str(run_dir), name=run_dir.name,
                        resume="allow")
        logger = wb.log
    try:
        result = train(cfg, run_dir, resume=resume, cache_dir=args.cache_dir, progress=not args.quiet,
                       gif=not args.no_gif, logger=logger)
    except TrainingDiverged as err:
        print(f"training stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: keycld train --resume {run_dir}", file=sys.stderr)
        return 130
    vpt = result.get("vpt")
    if vpt:
        print(f"{run_dir}: VPT mean {vpt['mean']:.2f} ± {vpt['std']:.2f}, median {vpt['median']:.1f} "
              f"(of {vpt['max_frames']} frames, {vpt['n']} validation sequences)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a KeyCLD model (or an ablation)")
    add_train_args(p)
    p.set_defaults(func=run_train, parser=p)


def script_parser(model: str, prog: str | None = None):
    """Parser of ``python keycld/dm.py`` / ``python ablations/*.py`` (the original README's flags)."""
    from keycld.cli import StrictParser

    p = StrictParser(prog=prog or Path(sys.argv[0]).name, description=f"train the {model} model")
    add_train_args(p, model_choice=False)
    return p


def script_main(model: str, argv: list[str] | None = None) -> int:
    """Entry point of ``python keycld/dm.py`` / ``python ablations/*.py`` (original README)."""
    p = script_parser(model)
    args = p.parse_args(argv)
    return run_train(args, p, model=model)
