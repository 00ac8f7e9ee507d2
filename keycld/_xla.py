"""XLA CPU settings that must be in the environment before jax creates its CPU backend.

With jax 0.10 on CPU, the default YNNPACK fusion makes the KeyCLD training step 1.2–1.45×
slower (``benchmarks/train_step.py`` measures both settings). The flag is appended to
whatever ``XLA_FLAGS`` the user already has; ``KEYCLD_NO_XLA_FLAGS=1`` opts out.

The flag is an experimental XLA option: other XLA releases may lack it (XLA aborts on an unknown
flag) or fuse differently. So it is applied only when the installed jax is in the range it was
measured on (``MEASURED_JAX``, i.e. 0.10.x); with any other jax, or none, ``XLA_FLAGS`` is left
as it is. The version is read from the installed distribution's metadata
(``importlib.metadata``), not by importing jax, because the flag has to be in the environment
before jax starts.
"""
from __future__ import annotations

import os
import re
from importlib import metadata

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
MEASURED_JAX = (0, 10)  # (major, minor) of the jax releases the flag was measured on


def installed_jax_version() -> str | None:
    """The installed jax distribution's version string, or None when jax is not installed."""
    try:
        return metadata.version("jax")
    except metadata.PackageNotFoundError:
        return None


def flag_applies(jax_version: str | None) -> bool:
    """True when ``jax_version`` (e.g. ``"0.10.2"``) has the major.minor of ``MEASURED_JAX``."""
    match = re.match(r"(\d+)\.(\d+)(?:\D|$)", jax_version or "")
    return match is not None and (int(match[1]), int(match[2])) == MEASURED_JAX


def configure_xla() -> bool:
    """Append the YNN fusion flag to ``XLA_FLAGS`` unless present, opted out, or jax is not 0.10.x.

    Returns True if the flag is in effect (also when the user's ``XLA_FLAGS`` already set it).
    Has no effect once jax has built its backend.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_experimental_ynn_fusion_type" in flags:
        return True
    if os.environ.get("KEYCLD_NO_XLA_FLAGS") == "1" or not flag_applies(installed_jax_version()):
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + YNN_FLAG).strip()
    return True
