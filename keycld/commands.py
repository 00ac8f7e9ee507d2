"""The ``keycld`` subcommands this package defines (train, evaluate, reproduce) register here.

Commands that need the environments or the agents (``export``, ``demo``) are added by the
full command line, :mod:`agents.cli`, which may import every layer.
"""
from __future__ import annotations

from keycld import evaluate_cli, train_cli


def register(sub) -> None:
    """Add keycld's subcommands to ``sub`` (an argparse subparsers action)."""
    for module in (train_cli, evaluate_cli):
        module.register(sub)
