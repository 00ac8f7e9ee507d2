"""The ``keycld`` command line: ``keycld data``, ``keycld train``, ``keycld evaluate``, ...

Every subcommand validates its arguments before doing any work and exits with status 2 and a
message naming the bad value and the allowed ones.
"""
from __future__ import annotations

import argparse
import sys

from keycld._allocator import reexec_under_tcmalloc
from keycld._xla import configure_xla

configure_xla()

from keycld.cliutil import StrictParser, positive_int  # noqa: E402


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    from keycld.data import CONTROLS, ENVIRONMENTS, INIT_MODES

    p.add_argument("--environment", required=True, choices=ENVIRONMENTS)
    p.add_argument("--init_mode", default="random", choices=INIT_MODES)
    p.add_argument("--control", default="yes", choices=CONTROLS)
    p.add_argument("--num_runs", type=positive_int, default=500)
    p.add_argument("--num_frames", type=positive_int, default=50)
    p.add_argument("--first_seed", type=int, default=0,
                   help="seed of run 0 (runs use first_seed, first_seed+1, ...); 1000 for held-out runs")
    p.add_argument("--cache_dir", default=None, help="default: $KEYCLD_CACHE or ~/.cache/keycld")


def dataset_config_from_args(args, parser: argparse.ArgumentParser):
    from keycld.config import check_dataset_size
    from keycld.data import DatasetConfig

    try:
        check_dataset_size(args.num_runs, args.num_frames, args.first_seed)
        return DatasetConfig(args.environment, args.init_mode, args.control, args.num_runs,
                             args.num_frames, args.first_seed)
    except ValueError as err:
        parser.error(str(err))


def cmd_data(args, parser) -> int:
    from keycld.data import check_cache_dir, load_dataset

    cfg = dataset_config_from_args(args, parser)
    try:
        cache = check_cache_dir(args.cache_dir)
    except ValueError as err:
        parser.error(str(err))
    ds = load_dataset(cfg, cache_dir=cache, workers=args.workers, progress=not args.quiet)
    print(f"{cfg.name}: {len(ds)} runs × {ds.frames.shape[1]} frames "
          f"({len(ds) - cfg.num_val} train / {cfg.num_val} val), epsilon={ds.epsilon:.6f}, "
          f"cached at {cache / cfg.name}")
    if args.preview:
        from keycld.viz import save_preview
        save_preview(ds, args.preview)
        print(f"wrote {args.preview}")
    return 0


def build_parser(registrars=()) -> argparse.ArgumentParser:
    """The ``keycld`` parser: data, train, evaluate, reproduce, and the subcommands each of
    ``registrars`` (callables taking the subparsers action) adds."""
    parser = StrictParser(prog="keycld", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=StrictParser)

    p = sub.add_parser("data", help="generate (or load) and cache a dataset")
    add_dataset_args(p)
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    p.add_argument("--preview", default=None, help="write a PNG grid of the first frames here")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_data, parser=p)

    from keycld import commands
    commands.register(sub)
    for register in registrars:
        register(sub)
    return parser


def main(argv: list[str] | None = None, registrars=()) -> int:
    """Run the command line (``python -m keycld.cli``: keycld's own subcommands; the installed
    ``keycld`` command is :func:`agents.cli.main`, which adds export and demo)."""
    if argv is None:  # a process started from the command line: under tcmalloc (keycld._allocator)
        try:
            reexec_under_tcmalloc()
        except ValueError as err:
            print(f"keycld: error: {err}", file=sys.stderr)
            return 2
    parser = build_parser(registrars)
    args = parser.parse_args(argv)
    return args.func(args, args.parser) or 0


if __name__ == "__main__":
    sys.exit(main())
