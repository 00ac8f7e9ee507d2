"""``keycld demo`` (what ``make demo`` runs).

Until trained models ship with the package, the demo generates a small pendulum and cartpole
dataset with the paper's physics and writes previews of its frames under ``demo/``.
"""
from __future__ import annotations

from pathlib import Path


def cmd_demo(args, parser) -> int:
    from keycld.data import DatasetConfig, load_dataset
    from keycld.viz import save_preview

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for env in ("pendulum", "cartpole", "acrobot"):
        ds = load_dataset(DatasetConfig(env, "random", "yes", num_runs=8, num_frames=50),
                          cache_dir=args.cache_dir, progress=not args.quiet)
        save_preview(ds, out / f"{env}_preview.png")
        print(f"{env}: {len(ds)} runs, ε = {ds.epsilon:.5f}; wrote {out / f'{env}_preview.png'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="the demo on shipped defaults (make demo)")
    p.add_argument("--out", default="demo")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo, parser=p)
