"""Script entry point with the paper code's flags: ``python keycld/dm.py --environment=... ...``
trains KeyCLD.

Equivalent to ``keycld train --model keycld ...``.
"""
import os
import sys

if __name__ == "__main__":
    # Running this file as a script puts keycld/ on sys.path; drop it so that keycld's
    # module names cannot shadow top-level modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    from keycld.train_cli import script_main

    sys.exit(script_main("keycld"))
