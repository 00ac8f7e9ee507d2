"""The installed ``keycld`` command: keycld's subcommands (data, train, evaluate, reproduce)
plus those that need the environments and the agents (export, demo).

It lives at the top of the import order (``keycld`` ← ``keycld_gym`` ← ``agents``), so it may
import every layer; ``python -m keycld.cli`` runs keycld's own subcommands without them.
"""
from __future__ import annotations

import sys

from keycld.cli import main as keycld_main


def _registrars():
    from agents import demo
    from keycld_gym import zoo

    return (zoo.register, demo.register)


def main(argv: list[str] | None = None) -> int:
    return keycld_main(argv, registrars=_registrars())


if __name__ == "__main__":
    sys.exit(main())
