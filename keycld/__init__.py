"""KeyCLD: learning constrained Lagrangian dynamics in keypoint coordinates from images.

``from keycld import System`` describes a system (:mod:`keycld.system`); the paper's three are
in :mod:`keycld.systems`. Submodules: ``tasks`` (the paper's dm_control tasks), ``data``
(datasets and your own runs), ``model`` (networks and dynamics), ``train``, ``evaluate``,
``rundir`` (the run-directory format), ``cli``.
"""
from keycld._xla import configure_xla

configure_xla()  # before anything imports jax

__version__ = "0.1.0"
__all__ = ["System", "__version__"]


def __getattr__(name: str):
    # System is loaded on first use, so `import keycld` (the CLI, the data workers) stays light
    if name == "System":
        from keycld.system import System
        return System
    raise AttributeError(f"module 'keycld' has no attribute {name!r}")
