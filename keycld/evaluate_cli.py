"""``keycld evaluate RUN_DIR`` and ``keycld reproduce``."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

SPLITS = ("val", "train", "heldout")
HELDOUT_FIRST_SEED, HELDOUT_RUNS = 1000, 50


def evaluation_dataset(cfg, split: str, cache_dir=None, progress: bool = True):
    """The sequences a split names: val/train of the training dataset, or 50 held-out runs
    with seeds 1000–1049 that training never saw."""
    from keycld.data import DatasetConfig, load_dataset

    if split == "heldout":
        dcfg = DatasetConfig(cfg.environment, cfg.init_mode, cfg.control, HELDOUT_RUNS, cfg.num_frames,
                             first_seed=HELDOUT_FIRST_SEED)
        ds = load_dataset(dcfg, cache_dir=cache_dir, progress=progress)
        train_eps = load_dataset(cfg.dataset_config(), cache_dir=cache_dir, progress=progress).epsilon
        import dataclasses
        return dataclasses.replace(ds, epsilon=train_eps)  # ε of the training data, as for val
    return load_dataset(cfg.dataset_config(), cache_dir=cache_dir, progress=progress).split(split)


def potential_landscape(model, params, dataset, path: Path) -> dict:
    """Encode the 16×16 grid of resting states, evaluate V on the keypoints, plot as a PNG."""
    import jax
    import jax.numpy as jnp
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = jnp.asarray(dataset.grid_frames.reshape(-1, 64, 64, 3), jnp.float32) / 255.0
    kp, _ = model.encode(params, grid)
    v = np.asarray(jax.vmap(lambda x: model.dynamics.potential(params["dynamics"], x))(kp)).reshape(16, 16)
    q = dataset.grid_qpos
    fig, ax = plt.subplots(figsize=(5, 4))
    if q.shape[-1] == 1:
        ax.plot(q.reshape(-1), v.reshape(-1), ".-")
        ax.set_xlabel("pendulum angle [rad] (0 = upright)")
        ax.set_ylabel("learned V")
    else:
        names = {"cartpole": ("cart position [m]", "pole angle [rad]"),
                 "acrobot": ("shoulder angle [rad]", "elbow angle [rad]")}[model.environment]
        im = ax.imshow(v.T, origin="lower", aspect="auto",
                       extent=[q[0, 0, 0], q[-1, 0, 0], q[0, 0, 1], q[0, -1, 1]])
        fig.colorbar(im, ax=ax, label="learned V")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    ax.set_title(f"learned potential energy, {model.environment}")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return {"min": float(v.min()), "max": float(v.max())}


def cmd_evaluate(args, parser) -> int:
    from keycld.evaluate import evaluate_vpt, write_json
    from keycld.train import load_model

    run_dir = Path(args.run_dir)
    try:
        model, params, cfg = load_model(run_dir)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    ds = evaluation_dataset(cfg, args.split, args.cache_dir, progress=not args.quiet)
    stats = evaluate_vpt(model, params, ds)
    stats["split"] = args.split
    if model.dynamics.lagrangian:
        # every dataset of a system carries the same 16×16 resting-state grid
        stats["potential"] = potential_landscape(model, params, ds, run_dir / "potential.png")
    out = run_dir / ("vpt.json" if args.split == "val" else f"vpt_{args.split}.json")
    write_json(out, stats)
    print(f"{run_dir} [{args.split}, {stats['n']} sequences, ε={stats['epsilon']:.5f}]: "
          f"VPT mean {stats['mean']:.2f} ± {stats['std']:.2f}, median {stats['median']:.1f} "
          f"(max {stats['max_frames']})")
    if "constraint_residual" in stats:
        r = stats["constraint_residual"]
        print(f"  constraint residual |Φ(x)| over predicted keypoints: mean {r['mean']:.2e}, "
              f"median {r['median']:.2e}, max {r['max']:.2e}")
    print(f"  wrote {out}" + (f" and {run_dir / 'potential.png'}" if "potential" in stats else ""))
    return 0


# ---- keycld reproduce -------------------------------------------------------------------------
DATASETS = [("pendulum", "no"), ("pendulum", "yes"), ("cartpole", "no"), ("cartpole", "underactuated"),
            ("cartpole", "yes"), ("acrobot", "no"), ("acrobot", "underactuated"), ("acrobot", "yes")]
REPRO_MODELS = ("keycld", "no_constraint", "node2", "fc")
PAPER_ARGS = ("--batch_size=1 --dynamics_weight=1 --bce_weight=1 --solver=euler --learning_rate=0.0003 "
              "--num_epochs=40 --num_hidden_dim=32 --num_predicted_steps=4")


def reproduce_commands(root: str, extra: str = "") -> list[tuple[str, str, str, list[str]]]:
    """(model, environment, control, argv) for the 24 original README commands plus fc."""
    out = []
    for model in REPRO_MODELS:
        for env, control in DATASETS:
            argv = [sys.executable, "-m", "keycld.cli", "train", f"--model={model}", f"--environment={env}",
                    "--init_mode=random", f"--control={control}", *PAPER_ARGS.split(), *shlex.split(extra),
                    f"--out={root}/{model}-{env}-random-{control}", "--quiet", "--no_gif"]
            out.append((model, env, control, argv))
    return out


def vpt_table(root: Path) -> str:
    """Markdown table of VPT mean ± std per dataset and model from the run directories under
    ``root`` (one implementation: :mod:`keycld.vpt_table`)."""
    from keycld.vpt_table import collect_runs, render_table

    return render_table(collect_runs([Path(root)]), base=Path(root))


def cmd_reproduce(args, parser) -> int:
    root = Path(args.root)
    commands = reproduce_commands(str(root), args.extra)
    for model, env, control, argv in commands:
        run = root / f"{model}-{env}-random-{control}"
        if (run / "vpt.json").exists():
            continue
        if (run / "checkpoint.msgpack").exists():
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
                   help="val / train of the training dataset, or heldout (seeds 1000-1049)")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate, parser=p)

    p = sub.add_parser("reproduce", help="train every experiment of the paper (24 commands + fc) and tabulate VPT")
    p.add_argument("--root", default="runs/reproduce")
    p.add_argument("--extra", default="", help="extra train flags, e.g. '--preset cpu' for a short budget")
    p.add_argument("--dry_run", action="store_true", help="print the commands and the current table only")
    p.set_defaults(func=cmd_reproduce, parser=p)
