"""The one command-line style of the project: a strict argparse parser and argument types."""
from __future__ import annotations

import argparse


class StrictParser(argparse.ArgumentParser):
    """No abbreviations; unknown options (e.g. ``---batch_size`` with three dashes) are errors."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            typo = [a for a in extra if a.startswith("---")]
            hint = (f" ({typo[0]!r} has three dashes; did you mean {typo[0][1:].split('=')[0]!r}?)"
                    if typo else "")
            self.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        return ns


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
