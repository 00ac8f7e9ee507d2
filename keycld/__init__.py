"""KeyCLD: learning constrained Lagrangian dynamics in keypoint coordinates from images.

Submodules: ``tasks`` (the paper's dm_control tasks), ``data`` (datasets), ``model``
(networks and dynamics), ``train``, ``evaluate``, ``cli``.
"""
from keycld._xla import configure_xla

configure_xla()  # before anything imports jax (DESIGN.md §5)

__version__ = "0.1.0"
