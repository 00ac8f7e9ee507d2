"""benchmarks/step_variants.py: an "autodiff" variant computes the same function and gradients as
the hand-written gradient it replaces (so the benchmark compares speed, not different maths)."""
from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from keycld.model import networks

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sv():
    return SimpleNamespace(**runpy.run_path(str(ROOT / "benchmarks" / "step_variants.py")))


def _args(name: str):
    rng = np.random.default_rng(0)
    a = lambda *s: jnp.asarray(rng.normal(size=s).astype(np.float32))
    return {"upsampled_conv": (a(2, 4, 4, 3), a(3, 3, 3, 5)),
            "add_channel_bias": (a(2, 4, 4, 3), a(3)),
            "narrow_conv": (a(2, 6, 6, 8), a(3, 3, 8, 2)),
            "group_norm_relu": (a(2, 4, 4, 8), a(8), a(8), 4, 1e-6)}[name]


@pytest.mark.parametrize("name", ["upsampled_conv", "add_channel_bias", "narrow_conv", "group_norm_relu"])
def test_autodiff_variant_matches_the_hand_written_gradient(sv, name):
    assert f"autodiff: {name}" in sv.CODE_VARIANTS
    copy = SimpleNamespace(**vars(networks))
    sv._autodiff(copy, name)
    plain, fast = getattr(copy, name), getattr(networks, name)
    assert plain is not fast
    args = _args(name)
    diff = [i for i, x in enumerate(args) if isinstance(x, jnp.ndarray)]

    def loss(f, *xs):
        full = list(args)
        for i, x in zip(diff, xs):
            full[i] = x
        return jnp.sum(jnp.sin(f(*full)))

    xs = [args[i] for i in diff]
    np.testing.assert_allclose(loss(plain, *xs), loss(fast, *xs), rtol=1e-5)
    for g_plain, g_fast in zip(jax.grad(lambda *v: loss(plain, *v), argnums=tuple(range(len(xs))))(*xs),
                               jax.grad(lambda *v: loss(fast, *v), argnums=tuple(range(len(xs))))(*xs)):
        np.testing.assert_allclose(g_plain, g_fast, rtol=1e-4, atol=1e-5)


def test_variant_networks_restores_the_module(sv):
    before = dict(vars(networks))
    with sv.variant_networks("autodiff: group_norm_relu") as patched:
        assert patched.group_norm_relu is not before["group_norm_relu"]
        patched.extra_name = 1
    assert dict(vars(networks)) == before
    with pytest.raises(RuntimeError), sv.variant_networks("autodiff: upsampled_conv"):
        raise RuntimeError("a failed build")
    assert networks.upsampled_conv is before["upsampled_conv"]
