"""benchmarks/train_step_profile.py: the wall-clock split among overlapping ops, the HLO
op -> layer / direction / kind map, and a traced call of a small jitted function."""
from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def prof():
    """The benchmark script's functions (it is a script, not a module of a package)."""
    return SimpleNamespace(**runpy.run_path(str(ROOT / "benchmarks" / "train_step_profile.py")))


def test_overlapping_ops_share_the_wall_clock_and_gaps_are_idle(prof):
    # a alone 0-10, a and b together 10-20, nothing 20-30, b alone 30-40; window 0-50
    events = [(0, 20, "a"), (10, 20, "b"), (30, 40, "b")]
    share, idle, total = prof.attribute(events, [(0, 50)])
    assert share == {"a": 15.0, "b": 15.0}
    assert (idle, total) == (20.0, 50.0)
    # a second window counts separately, clipping the ops to it
    share, idle, total = prof.attribute(events, [(0, 5), (15, 35)])
    assert share == {"a": 5.0 + 2.5, "b": 2.5 + 5.0}
    assert (idle, total) == (10.0, 25.0)


def test_gap_after_an_async_op_is_that_ops_work(prof):
    # b's event ends at 15 but its thread-pool work runs until a starts again at 30
    events = [(0, 10, "a"), (10, 15, "b"), (30, 40, "a")]
    share, idle, total = prof.attribute(events, [(0, 50)], frozenset({"b"}))
    assert share == {"a": 20.0, "b": 20.0}
    assert (idle, total) == (10.0, 50.0)
    # without the async mark the same gap is idle
    share, idle, _ = prof.attribute(events, [(0, 50)])
    assert share == {"a": 20.0, "b": 5.0} and idle == 25.0


def _small_net(params, x):
    with jax.named_scope("UNet_0"):
        with jax.named_scope("SplitConv_0"):
            y = jax.lax.conv_general_dilated(x, params["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        with jax.named_scope("GroupNorm_0"):
            y = jax.nn.relu(y * params["s"])
        y = y.reshape(y.shape[0], y.shape[1] // 2, 2, y.shape[2] // 2, 2, -1).max(axis=(2, 4))
    return jnp.tanh(y)


def _grad_fn():
    rng = np.random.default_rng(0)
    params = {"k": jnp.asarray(rng.normal(size=(3, 3, 2, 4)).astype(np.float32)),
              "s": jnp.ones((4,), jnp.float32)}
    x = jnp.asarray(rng.normal(size=(3, 8, 8, 2)).astype(np.float32))

    def fwd_bwd(p, xx):
        return jax.grad(lambda q: _small_net(q, xx).sum())(p)

    return fwd_bwd, (params, x)


def test_hlo_ops_map_to_layers_directions_and_kinds(prof):
    fn, args = _grad_fn()
    ops = prof.hlo_ops(jax.jit(fn).lower(*args).compile().as_text())
    convs = {n: o for n, o in ops.items() if o["kind"] == "convolution"}
    assert convs and all(o["layer"] == "SplitConv_0" for o in convs.values())
    # the forward convolution and the kernel gradient's convolution
    assert {o["direction"] for o in convs.values()} == {"forward", "backward"}
    layers = {o["layer"] for o in ops.values()}
    assert {"SplitConv_0", "GroupNorm_0", prof.BETWEEN} <= layers  # the pooling lies between modules
    assert layers <= set(prof.MODULE_LAYERS) | {prof.BETWEEN, prof.OUTSIDE, prof.UNATTRIBUTED, "GroupNorm_0"}
    with pytest.raises(ValueError):
        prof.hlo_ops("HloModule m\n")  # no entry computation


def test_profile_accounts_for_the_traced_calls(prof):
    fn, args = _grad_fn()
    per_op, idle, traced_s, untraced_s, hlo = prof.profile(fn, args, 3)
    idle_s = idle["total"]
    assert 0 <= idle["edges"] <= idle_s and idle["ops"] >= 1
    assert per_op and set(per_op) <= set(prof.hlo_ops(hlo))
    # the ops' shares and the idle time add up to the traced wall clock
    assert sum(per_op.values()) + idle_s == pytest.approx(traced_s, rel=1e-6)
    assert traced_s > 0 and untraced_s > 0 and idle_s >= 0
