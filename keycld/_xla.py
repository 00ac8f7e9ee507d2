"""XLA CPU settings that must be in the environment before jax creates its CPU backend.

With jax 0.10 on CPU, the default YNNPACK fusion makes convolutions 2.6× slower for the
KeyCLD U-Nets (``benchmarks/train_step.py`` measures both settings). The flag
is appended to whatever ``XLA_FLAGS`` the user already has; ``KEYCLD_NO_XLA_FLAGS=1`` opts out.
"""
from __future__ import annotations

import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def configure_xla() -> bool:
    """Append the YNN fusion flag to ``XLA_FLAGS`` unless present or opted out.

    Returns True if the flag is in effect. Has no effect once jax has built its backend.
    """
    if os.environ.get("KEYCLD_NO_XLA_FLAGS") == "1":
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_experimental_ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + YNN_FLAG).strip()
    return True
