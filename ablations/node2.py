"""Script entry point with the paper code's flags: `python ablations/node2.py ...` =
`keycld train --model node2 ...`."""
import sys

if __name__ == "__main__":
    from keycld.train_cli import script_main

    sys.exit(script_main("node2"))
