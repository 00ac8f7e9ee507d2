"""``keycld train`` and the paper code's script entry points (keycld/dm.py, ablations/*.py)."""
from __future__ import annotations

import dataclasses

import argparse
import sys
from pathlib import Path

from keycld.config import MODELS, PRESETS, REFINE_WHEN, TrainConfig, preset_fields
from keycld.model.onednn import BACKENDS


def _str2bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_train_args(p: argparse.ArgumentParser, model_choice: bool = True) -> None:
    from keycld.cliutil import positive_int
    from keycld.data import CONTROLS, ENVIRONMENTS, INIT_MODES
    from keycld.model.integrators import SOLVERS

    d = TrainConfig()
    p.add_argument("--environment", choices=ENVIRONMENTS)
    p.add_argument("--system", default=None, metavar="FILE.py[:NAME]",
                   help="your own System: a Python file defining SYSTEM (or NAME); needs --data. "
                        "A built-in name (pendulum, cartpole, acrobot) is the same as --environment")
    p.add_argument("--data", default=None, metavar="RUNS.npz",
                   help="your own runs: frames uint8 (N, T, 64, 64, 3) and actions float32 (N, A) or (N, T, A)")
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
    p.add_argument("--sigma", type=float, default=None,
                   help=f"width of the renderer's keypoint Gaussian maps in image units (paper {d.sigma})")
    p.add_argument("--refine_epochs", type=int, default=None,
                   help="the last N epochs train the dynamics with the --refine_* settings (0 = off)")
    p.add_argument("--refine_num_predicted_steps", type=positive_int, default=None,
                   help="num_predicted_steps in the refine epochs")
    p.add_argument("--refine_dynamics_lr_factor", type=float, default=None,
                   help="dynamics_lr_factor in the refine epochs")
    p.add_argument("--warmup_epochs", type=int, default=None,
                   help="the first N epochs train the encoder and renderer alone (0 = off)")
    p.add_argument("--warmup_sigma", type=float, default=None,
                   help="Gaussian map width in the warm-up epochs (default: --sigma)")
    p.add_argument("--warmup_foreground_weight", type=float, default=None,
                   help="weight of the foreground term in the warm-up epochs: heatmaps drawn to the pixels "
                        "that differ from the data's static background (0 = off)")
    p.add_argument("--refine_when", choices=REFINE_WHEN, default=None,
                   help="'epoch': the last --refine_epochs refine; 'localised': refining starts after the first "
                        "epoch whose validation reconstruction ratio (MSE / ε) is below --localised_ratio")
    p.add_argument("--localised_ratio", type=float, default=None,
                   help=f"threshold of --refine_when localised (default {d.localised_ratio})")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num_runs", type=positive_int, default=None, help=f"dataset size (default {d.num_runs})")
    p.add_argument("--num_frames", type=positive_int, default=None, help=f"frames per run (default {d.num_frames})")
    p.add_argument("--max_steps_per_epoch", type=positive_int, default=None)
    p.add_argument("--augment", type=_str2bool, default=None)
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="'paper' = the paper's configuration (default); 'cpu' = h=16, 12 epochs with a warm-up "
                        "and a measured refine stage (under 1 h on 2 cores)")
    p.add_argument("--out", default=None, help="run directory (default runs/MODEL-ENV-INIT-CONTROL-sSEED)")
    p.add_argument("--init_from", default=None, metavar="RUN_DIR",
                   help="start from the weights of another run (fine-tuning with new settings)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--wandb", action="store_true", help="log to Weights & Biases (WANDB_MODE=offline works)")
    p.add_argument("--no_gif", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--conv_backend", choices=BACKENDS, default=None,
                   help="the networks' convolutions in training: oneDNN through PyTorch (CPU; same function, "
                        "faster), XLA's own kernels, or auto (default: onednn on a CPU with PyTorch installed)")


DATA_DEFINED = ("environment", "init_mode", "control", "num_runs", "num_frames")  # what --data fixes


def resolve_system(args, parser):
    """(System, its spec file or None) from --system / --environment; errors before any work."""
    from keycld import systems
    from keycld.system import load_system_file

    if args.system is not None and args.system in systems.BUILTIN:
        if args.environment not in (None, args.system):
            parser.error(f"--system {args.system} and --environment {args.environment} disagree; give one")
        if args.data is not None:
            parser.error(f"--data trains your own system; --system {args.system} is a built-in paper task "
                         "(its data is generated; drop --data or give --system FILE.py[:NAME])")
        args.environment = args.system
        return systems.get(args.system), None
    if args.system is not None:
        try:
            system, path, attr = load_system_file(args.system)
        except ValueError as err:
            parser.error(f"--system: {err}")
        if args.data is None:
            parser.error(f"--system {args.system} needs --data RUNS.npz (your runs of that system)")
        given = [f"--{k}" for k in DATA_DEFINED if getattr(args, k, None) is not None]
        if given:
            parser.error(f"{', '.join(given)} cannot be combined with --data (the data and the System define them)")
        return system, (path, attr)
    if args.data is not None:
        parser.error("--data needs --system FILE.py[:NAME], the System the runs show")
    if args.environment is None:
        parser.error("--environment (pendulum, cartpole, acrobot) or --system FILE.py with --data is required "
                     "unless --resume is given")
    return systems.get(args.environment), None


def config_from_args(args, parser, model: str | None = None) -> TrainConfig:
    """The TrainConfig the parsed flags describe; every check runs before any work."""
    return config_and_spec_from_args(args, parser, model)[0]


def config_and_spec_from_args(args, parser, model: str | None = None):
    """(TrainConfig, your System's spec file or None) from the parsed flags; every check runs
    before any work."""
    from keycld.data import load_runs
    from keycld.fileio import sha256

    system, spec = resolve_system(args, parser)
    fields = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if getattr(args, k, None) is not None}
    fields.pop("system", None)
    if model is not None:
        fields["model"] = model
    if spec is not None:
        try:
            data = load_runs(args.data, system)
        except ValueError as err:
            parser.error(f"--data: {err}")
        path = Path(args.data).resolve()
        fields.update(environment=system.name, init_mode=None, control=None, system_attr=spec[1],
                      data=str(path), data_sha256=sha256(path),
                      num_runs=int(data.frames.shape[0]), num_frames=int(data.frames.shape[1]))
    preset = preset_fields(args.preset, system, fields.get("num_frames")) if args.preset else {}
    if fields.get("warmup_epochs") == 0:  # the preset's warm-up settings, for a warm-up turned off
        for name in ("warmup_sigma", "warmup_foreground_weight"):
            if name not in fields:
                preset.pop(name, None)
    merged = {**preset, **fields}
    try:
        return TrainConfig(**merged), (None if spec is None else spec[0])
    except ValueError as err:
        parser.error(str(err))


# flags that only steer this process (logging, output), never the run's configuration
PROCESS_FLAGS = ("resume", "num_epochs", "cache_dir", "wandb", "no_gif", "quiet", "conv_backend")


def resume_conflicts(args, saved: TrainConfig, run_dir: Path, model: str | None = None) -> list[str]:
    """'--flag VALUE (saved: VALUE)' for each flag given with ``--resume`` that would change the
    run's saved configuration (``--num_epochs`` may extend it and is not listed)."""
    from keycld import rundir, systems

    saved_fields = saved.to_dict()
    out = []
    for k, v in vars(args).items():
        if v is None or k in PROCESS_FLAGS or k in ("func", "parser", "command"):
            continue
        if k in saved_fields:
            same = (Path(v).resolve() == Path(saved.data).resolve()) if k == "data" and saved.data else v == saved_fields[k]
            if not same:
                out.append(f"--{k} {v} (saved: {saved_fields[k]})")
        elif k == "system" and not (v in systems.BUILTIN and v == saved.environment):
            out.append(f"--system {v} (saved: {saved.environment}; the run keeps its own copy "
                       f"{run_dir / rundir.SYSTEM_SPEC})" if saved.user_data else f"--system {v} (saved: {saved.environment})")
        elif k == "out" and Path(v).resolve() != run_dir.resolve():
            out.append(f"--out {v} (the run's directory is {run_dir})")
    if model is not None and model != saved.model:
        out.append(f"model {model} of this script (saved: {saved.model})")
    return out


def _check_unlocked(run_dir: Path, parser) -> None:
    """Exit with a message when another process trains in ``run_dir`` (writes nothing: the lock
    file is only probed when it exists)."""
    from keycld import fileio, rundir

    lock = run_dir / rundir.LOCK
    if lock.is_file():
        try:
            with fileio.locked(lock, wait=False, what=f"run directory {run_dir}"):
                pass
        except fileio.LockedError as err:
            parser.error(str(err))


def run_train(args, parser, model: str | None = None) -> int:
    from keycld import fileio, rundir
    from keycld.data import check_cache_dir
    from keycld.train import TrainingDiverged, source_params, train

    system_file = None
    if args.resume:
        run_dir = Path(args.resume)
        try:
            cfg = rundir.check_resumable(run_dir)
        except (FileNotFoundError, ValueError) as err:
            parser.error(f"--resume: {err}")
        conflicts = resume_conflicts(args, cfg, run_dir, model)
        if conflicts:
            parser.error(f"--resume {run_dir} continues the run with its saved configuration; these flags would "
                         f"change it: {', '.join(conflicts)}. Only --num_epochs may change (to extend the schedule); "
                         f"for other settings start a new run (--out NEW_DIR, --init_from {run_dir} to start from "
                         "its weights)")
        if args.num_epochs is not None and args.num_epochs != cfg.num_epochs:
            # extending a finished (or running) schedule: the only setting a resume may change
            if args.num_epochs < cfg.num_epochs:
                parser.error(f"--num_epochs {args.num_epochs} is below the run's {cfg.num_epochs}; "
                             "a resume can only extend the schedule")
            try:
                cfg = dataclasses.replace(cfg, num_epochs=args.num_epochs)
            except ValueError as err:
                parser.error(str(err))
        resume = True
    else:
        cfg, system_file = config_and_spec_from_args(args, parser, model)
        name = (f"{cfg.model}-{cfg.environment}-s{cfg.seed}" if cfg.user_data
                else f"{cfg.model}-{cfg.environment}-{cfg.init_mode}-{cfg.control}-s{cfg.seed}")
        run_dir = Path(args.out or f"runs/{name}")
        resume = False
        try:
            rundir.check_new_run(run_dir, cfg)
            source_params(cfg)
        except (FileExistsError, ValueError) as err:
            parser.error(str(err))
    _check_unlocked(run_dir, parser)
    from keycld.model.onednn import resolve

    try:
        conv_backend = resolve(args.conv_backend or "auto")
    except ValueError as err:
        parser.error(f"--conv_backend: {err}")
    cache_dir = args.cache_dir
    if not cfg.user_data:
        try:
            cache_dir = check_cache_dir(args.cache_dir)
        except ValueError as err:
            parser.error(f"--cache_dir: {err}")
    logger = None
    if args.wandb:
        try:
            import wandb
        except ImportError:
            parser.error("--wandb needs the wandb package: pip install 'keycld-gym[wandb]'")
        run_dir.mkdir(parents=True, exist_ok=True)
        wb = wandb.init(project="keycld", config=cfg.to_dict(), dir=str(run_dir), name=run_dir.name,
                        resume="allow")
        logger = wb.log
    try:
        result = train(cfg, run_dir, resume=resume, cache_dir=cache_dir, progress=not args.quiet,
                       gif=not args.no_gif, logger=logger, system_file=system_file, conv_backend=conv_backend)
    except fileio.LockedError as err:  # another process started training here since the check above
        parser.error(str(err))
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
    """Parser of ``python keycld/dm.py`` / ``python ablations/*.py`` (the paper code's flags)."""
    from keycld.cliutil import StrictParser

    p = StrictParser(prog=prog or Path(sys.argv[0]).name, description=f"train the {model} model")
    add_train_args(p, model_choice=False)
    return p


def script_main(model: str, argv: list[str] | None = None) -> int:
    """Entry point of ``python keycld/dm.py`` / ``python ablations/*.py`` (the paper code's flags)."""
    p = script_parser(model)
    args = p.parse_args(argv)
    return run_train(args, p, model=model)
