"""Subcommands added by later modules (train, evaluate, reproduce, demo) register here."""
from __future__ import annotations


def register(sub) -> None:
    """Add the optional subcommands to ``sub`` (an argparse subparsers action)."""
    for name in ("keycld.train_cli", "keycld.evaluate_cli", "keycld.demo", "keycld_gym.zoo"):
        try:
            module = __import__(name, fromlist=["register"])
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)
