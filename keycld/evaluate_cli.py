"""``keycld evaluate RUN_DIR`` and ``keycld reproduce``."""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from keycld.config import DATASETS, REPRO_MODELS

SPLITS = ("val", "train", "heldout")
HELDOUT_FIRST_SEED, HELDOUT_RUNS = 1000, 50


def evaluation_dataset(cfg, split: str, system, cache_dir=None, progress: bool = True, data=None):
    """The sequences to evaluate on, with the training data's ε.

    ``data`` (an npz of runs, as for training) evaluates every run of that file. Otherwise
    ``split`` names val/train of the training data, or for the paper's tasks ``heldout``: 50
    runs with seeds 1000–1049 that training never saw.
    """
    import dataclasses

    from keycld.data import DatasetConfig, load_dataset, load_runs
    from keycld.train import load_training_data

    if data is not None:
        train_eps = load_training_data(cfg, system, cache_dir, progress).epsilon
        return dataclasses.replace(load_runs(data, system), epsilon=train_eps, num_val=0)
    if split == "heldout":
        if cfg.user_data:
            raise ValueError("split 'heldout' generates new runs of the paper's tasks; for your own system pass "
                             "--data FILE.npz with runs the model did not train on")
        dcfg = DatasetConfig(cfg.environment, cfg.init_mode, cfg.control, HELDOUT_RUNS, cfg.num_frames,
                             first_seed=HELDOUT_FIRST_SEED)
        ds = load_dataset(dcfg, cache_dir=cache_dir, progress=progress)
        train_eps = load_dataset(cfg.dataset_config(), cache_dir=cache_dir, progress=progress).epsilon
        return dataclasses.replace(ds, epsilon=train_eps)  # ε of the training data, as for val
    return load_training_data(cfg, system, cache_dir, progress).split(split)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from keycld import fileio

    fileio.atomic_write(path, lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)


def potential_landscape(model, params, dataset, path: Path, max_points: int = 2000) -> dict:
    """Plot the learned V as a PNG and return its range.

    Paper datasets: V on the encoded 16×16 grid of resting states, against the true joint
    positions. Otherwise (your own runs, no true states): V at the encoded keypoints of the
    dataset's frames (at most ``max_points``), one panel per keypoint, each point at that
    keypoint's position coloured by V of the whole configuration.
    """
    import jax
    import jax.numpy as jnp
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    potential = jax.jit(jax.vmap(lambda x: model.dynamics.potential(params["dynamics"], x)))
    encode = jax.jit(lambda f: model.encode(params, f.astype(jnp.float32) / 255.0)[0])
    if dataset.grid_frames is None:
        frames = dataset.frames.reshape(-1, 64, 64, 3)
        pick = np.random.default_rng(0).permutation(len(frames))[:max_points]
        kp = np.concatenate([np.asarray(encode(jnp.asarray(frames[np.sort(pick[i:i + 256])])))
                             for i in range(0, len(pick), 256)])
        v = np.asarray(potential(jnp.asarray(kp)))
        k = model.num_keypoints
        fig, axes = plt.subplots(1, k, figsize=(4.2 * k, 4), squeeze=False)
        for i, ax in enumerate(axes[0]):
            sc = ax.scatter(kp[:, 2 * i], kp[:, 2 * i + 1], c=v, s=6, cmap="viridis")
            ax.set_xlim(-1, 1)
            ax.set_ylim(-1, 1)
            ax.set_aspect("equal")
            ax.set_xlabel(f"keypoint {i + 1} x [image units]")
            ax.set_ylabel(f"keypoint {i + 1} y [image units]")
        fig.colorbar(sc, ax=axes[0].tolist(), label="learned V")
        fig.suptitle(f"learned potential at the encoded keypoints, {model.environment}")
    else:
        grid = jnp.asarray(dataset.grid_frames.reshape(-1, 64, 64, 3))
        v = np.asarray(potential(encode(grid))).reshape(16, 16)
        q = dataset.grid_qpos
        fig, ax = plt.subplots(figsize=(5, 4))
        if q.shape[-1] == 1:
            ax.plot(q.reshape(-1), v.reshape(-1), ".-")
            ax.set_xlabel("joint angle [rad] (0 = upright)")
            ax.set_ylabel("learned V")
        else:
            im = ax.imshow(v.T, origin="lower", aspect="auto",
                           extent=[q[0, 0, 0], q[-1, 0, 0], q[0, 0, 1], q[0, -1, 1]])
            fig.colorbar(im, ax=ax, label="learned V")
            ax.set_xlabel("joint 1 position (qpos[0])")
            ax.set_ylabel("joint 2 angle [rad] (qpos[1])")
        ax.set_title(f"learned potential energy, {model.environment}")
        fig.tight_layout()
    _save_figure(fig, path)
    return {"min": float(v.min()), "max": float(v.max())}


def cmd_evaluate(args, parser) -> int:
    from keycld import fileio, rundir
    from keycld.evaluate import evaluate_vpt, hold_last_frame_vpt

    from keycld.data import check_cache_dir

    run_dir = Path(args.run_dir)
    try:
        model, params, cfg = rundir.load_model(run_dir, args.weights)
        origin = rundir.weights_origin(run_dir, args.weights)
        cache_dir = args.cache_dir if cfg.user_data else check_cache_dir(args.cache_dir)
        ds = evaluation_dataset(cfg, args.split, model.system, cache_dir, progress=not args.quiet,
                                data=args.data)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    stats = evaluate_vpt(model, params, ds)
    stats["split"] = "data" if args.data else args.split
    stats.update(rundir.weights_record(origin))
    stats["hold_last_frame"] = hold_last_frame_vpt(ds)
    if model.dynamics.lagrangian:
        stats["potential"] = potential_landscape(model, params, ds, run_dir / rundir.POTENTIAL)
    out = run_dir / rundir.vpt_file(stats["split"])
    fileio.write_json(out, stats)
    where = f"{args.data}" if args.data else args.split
    print(f"{run_dir} [{where}, {stats['n']} sequences, ε={stats['epsilon']:.5f}]: "
          f"VPT mean {stats['mean']:.2f} ± {stats['std']:.2f}, median {stats['median']:.1f} "
          f"(max {stats['max_frames']}); holding the last frame: {stats['hold_last_frame']['mean']:.2f}")
    if "constraint_residual" in stats:
        r = stats["constraint_residual"]
        print(f"  constraint residual |Φ(x)| over predicted keypoints: mean {r['mean']:.2e}, "
              f"median {r['median']:.2e}, max {r['max']:.2e}")
    print(f"  wrote {out}" + (f" and {run_dir / rundir.POTENTIAL}" if "potential" in stats else ""))
    return 0


# ---- keycld reproduce -------------------------------------------------------------------------
PAPER_ARGS = ("--batch_size=1 --dynamics_weight=1 --bce_weight=1 --solver=euler --learning_rate=0.0003 "
              "--num_epochs=40 --num_hidden_dim=32 --num_predicted_steps=4")


def reproduce_commands(root: str, extra: str = "", models=REPRO_MODELS, datasets=DATASETS,
                       preset: str = "paper") -> list[tuple[str, str, str, list[str]]]:
    """(model, environment, control, argv) of the paper's training commands (24 plus fc) for
    ``models`` × ``datasets``; ``preset`` "paper" spells out the paper's flags, "cpu" trains with
    ``--preset cpu``; ``extra`` flags come last (they override both)."""
    schedule = PAPER_ARGS.split() if preset == "paper" else [f"--preset={preset}"]
    out = []
    for model in models:
        for env, control in datasets:
            argv = [sys.executable, "-m", "keycld.cli", "train", f"--model={model}", f"--environment={env}",
                    "--init_mode=random", f"--control={control}", *schedule, *shlex.split(extra),
                    f"--out={root}/{model}-{env}-random-{control}", "--quiet", "--no_gif"]
            out.append((model, env, control, argv))
    return out


def dataset_choice(text: str) -> tuple[str, str]:
    """``ENV/CONTROL`` (one of the table's rows, ``DATASETS``) -> (env, control)."""
    env, _, control = text.partition("/")
    if (env, control) not in DATASETS:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {text!r}; allowed: {', '.join(f'{e}/{c}' for e, c in DATASETS)}")
    return env, control


def vpt_table(root: Path) -> str:
    """Markdown table of VPT mean ± std per dataset and model from the run directories under
    ``root`` (one implementation: :mod:`keycld.vpt_table`)."""
    from keycld.vpt_table import collect_runs, render_table

    return render_table(collect_runs([Path(root)]), base=Path(root))


def cmd_reproduce(args, parser) -> int:
    from keycld import rundir

    root = Path(args.root)
    commands = reproduce_commands(str(root), args.extra, args.models or REPRO_MODELS, args.datasets or DATASETS,
                                  args.preset)
    for model, env, control, argv in commands:
        run = root / f"{model}-{env}-random-{control}"
        if (run / rundir.VPT).exists():
            continue
        if (run / rundir.CHECKPOINT).exists():
            argv = [sys.executable, "-m", "keycld.cli", "train", f"--resume={run}", "--quiet", "--no_gif"]
        print("$ " + shlex.join(argv), flush=True)
        if not args.dry_run:
            code = subprocess.call(argv)
            if code != 0:
                print(f"command failed with status {code}; rerun `keycld reproduce` to resume", file=sys.stderr)
                return code
    table = vpt_table(root)
    out = root / "vpt_table.md"
    if not args.dry_run:
        root.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(".vpt_table.md.tmp")
        tmp.write_text("# VPT (frames, mean ± std (median)) on the 50 validation runs\n\n" + table)
        tmp.replace(out)
        print(f"wrote {out}")
    print(table)
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="VPT, constraint residuals and the potential landscape of a run")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=SPLITS, default="val",
                   help="val / train of the training dataset, or heldout (seeds 1000-1049; paper tasks)")
    p.add_argument("--data", default=None, metavar="RUNS.npz",
                   help="evaluate on every run of this npz instead (your own system's unseen runs)")
    p.add_argument("--weights", choices=("best", "last"), default="best",  # keycld.rundir.WEIGHTS (imports jax)
                   help="a training run's best validation epoch (default) or its last epoch")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate, parser=p)

    p = sub.add_parser("reproduce", help="train every experiment of the paper (24 commands + fc) and tabulate VPT")
    p.add_argument("--root", default="runs/reproduce")
    p.add_argument("--datasets", nargs="+", type=dataset_choice, default=None, metavar="ENV/CONTROL",
                   help="a subset of the rows, e.g. pendulum/yes cartpole/no (default: all 8)")
    p.add_argument("--models", nargs="+", choices=REPRO_MODELS, default=None,
                   help="a subset of the columns (default: all)")
    p.add_argument("--preset", choices=("paper", "cpu"), default="paper",
                   help="'paper': the paper's schedule (h=32, 40 epochs); 'cpu': keycld train --preset cpu")
    p.add_argument("--extra", default="", help="further train flags (last; they override the preset's)")
    p.add_argument("--dry_run", action="store_true", help="print the commands and the current table only")
    p.set_defaults(func=cmd_reproduce, parser=p)
