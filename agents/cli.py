"""The installed ``keycld`` command: keycld's subcommands (data, train, evaluate, reproduce)
plus those that need the environments and the agents (export, demo).

It lives at the top of the import order (``keycld`` ← ``keycld_gym`` ← ``agents``), so it may
import every layer; ``python -m keycld.cli`` runs keycld's own subcommands without them.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file (python agents/cli.py)
    import runpy, sys  # noqa: E401  # rerun as the package module, so relative imports work
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    runpy.run_module("agents.cli", run_name="__main__", alter_sys=True)
    raise SystemExit(0)

import sys

from keycld.cli import main as keycld_main


def _registrars():
    from . import demo
    from keycld_gym import zoo

    return (zoo.register, demo.register)


def main(argv: list[str] | None = None) -> int:
    return keycld_main(argv, registrars=_registrars())


if __name__ == "__main__":
    sys.exit(main())
