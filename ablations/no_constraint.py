"""Script entry point with the paper code's flags: `python ablations/no_constraint.py ...` =
`keycld train --model no_constraint ...`."""
import sys

if __name__ == "__main__":
    from keycld.train_cli import script_main

    sys.exit(script_main("no_constraint"))
