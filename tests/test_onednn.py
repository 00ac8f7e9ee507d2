"""The oneDNN convolution backend: the same function and gradients as XLA's convolutions."""
import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the oneDNN backend runs on the CPU")

from keycld.model import networks, onednn  # noqa: E402
from keycld.model.keycld import KeyCLD  # noqa: E402


def _reference(kinds, parts, kernels3, addend):
    """The plain computation: explicit ×2 upsampling, 3×3 SAME convolutions, sum, addend."""
    out = 0.0
    for kind, x, k in zip(kinds, parts, kernels3):
        out = out + networks._conv(networks._upsample(x) if kind == "up" else x, k, "SAME")
    return out + addend


def _ours(kinds, parts, kernels3, addend):
    kernels = tuple(networks._phase_kernel(k) if kind == "up" else k for kind, k in zip(kinds, kernels3))
    return onednn.split_conv(kinds, parts, kernels, addend)


def _case(kinds, addend_map: bool, n=3, size=8, c=(3, 5), f=4, seed=0):
    rng = np.random.default_rng(seed)
    parts, kernels = [], []
    for kind, ci in zip(kinds, c):
        s = size // 2 if kind == "up" else size
        parts.append(jnp.asarray(rng.normal(size=(n, s, s, ci)), jnp.float32))
        kernels.append(jnp.asarray(rng.normal(size=(3, 3, ci, f)) * 0.3, jnp.float32))
    addend = jnp.asarray(rng.normal(size=(size, size, f) if addend_map else (f,)), jnp.float32)
    ct = jnp.asarray(rng.normal(size=(n, size, size, f)), jnp.float32)
    return tuple(parts), tuple(kernels), addend, ct


@pytest.mark.parametrize("kinds", [("full",), ("up", "full"), ("full", "up"), ("up",)])
@pytest.mark.parametrize("addend_map", [False, True], ids=["bias", "map"])
def test_split_conv_matches_xla_with_gradients(kinds, addend_map):
    parts, kernels, addend, ct = _case(kinds, addend_map)
    ref, ref_vjp = jax.vjp(lambda p, k, a: _reference(kinds, p, k, a), parts, kernels, addend)
    got, got_vjp = jax.jit(lambda p, k, a: jax.vjp(lambda *z: _ours(kinds, *z), p, k, a))(parts, kernels, addend)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    for g, r in zip(jax.tree.leaves(got_vjp(ct)), jax.tree.leaves(ref_vjp(ct))):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_split_conv_under_vmap_sums_the_kernel_gradient_over_examples():
    kinds = ("up", "full")
    parts, kernels, addend, ct = _case(kinds, False)
    batched = tuple(jnp.stack([p, 2 * p]) for p in parts)  # 2 examples, shared kernels

    def loss(fn, k, a):
        y = jax.vmap(lambda *p: fn(kinds, p, k, a))(*batched)
        return jnp.sum(jnp.sin(y))

    ref = jax.grad(lambda k, a: loss(_reference, k, a), (0, 1))(kernels, addend)
    got = jax.jit(jax.grad(lambda k, a: loss(_ours, k, a), (0, 1)))(kernels, addend)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_input_gradients_under_vmap_with_an_unbatched_cotangent():
    """vmap(grad) with respect to the parts: the cotangent of the summed output is not batched."""
    kinds = ("up", "full")
    parts, kernels, addend, _ = _case(kinds, True, n=2)
    batched = tuple(jnp.stack([p, -0.5 * p, p ** 2]) for p in parts)

    def per_example(fn):
        return jax.vmap(jax.grad(lambda *p: jnp.sum(fn(kinds, p, kernels, addend)), argnums=(0, 1)))(*batched)

    for g, r in zip(jax.tree.leaves(jax.jit(lambda: per_example(_ours))()), jax.tree.leaves(per_example(_reference))):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_nested_vmap_with_arguments_batched_at_one_level_only():
    kinds = ("full", "up")
    parts, kernels, addend, _ = _case(kinds, False, n=2)
    outer = jnp.stack([parts[0], 2 * parts[0]])  # batched in the outer vmap only
    inner = jnp.stack([parts[1], -parts[1], 0.5 * parts[1]])  # batched in the inner vmap only

    def f(fn, k):
        rows = jax.vmap(lambda x: jax.vmap(lambda u: fn(kinds, (x, u), k, addend))(inner))(outer)
        return jnp.sum(jnp.cos(rows)), rows

    (_, ref), ref_g = jax.value_and_grad(lambda k: f(_reference, k), has_aux=True)(kernels)
    (_, got), got_g = jax.jit(jax.value_and_grad(lambda k: f(_ours, k), has_aux=True))(kernels)
    assert got.shape == (2, 3) + ref.shape[2:]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    for g, r in zip(jax.tree.leaves(got_g), jax.tree.leaves(ref_g)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_non_square_grids():
    kinds = ("up", "full")
    rng = np.random.default_rng(3)
    parts = (jnp.asarray(rng.normal(size=(2, 3, 5, 4)), jnp.float32), jnp.asarray(rng.normal(size=(2, 6, 10, 2)), jnp.float32))
    kernels = tuple(jnp.asarray(rng.normal(size=(3, 3, c, 3)), jnp.float32) for c in (4, 2))
    addend = jnp.asarray(rng.normal(size=(3,)), jnp.float32)
    ref, ref_vjp = jax.vjp(lambda *z: _reference(kinds, *z), parts, kernels, addend)
    got, got_vjp = jax.vjp(lambda *z: _ours(kinds, *z), parts, kernels, addend)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    for g, r in zip(jax.tree.leaves(got_vjp(jnp.ones_like(ref))), jax.tree.leaves(ref_vjp(jnp.ones_like(ref)))):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("change, message", [
    (lambda p, k, a: ((p[0], p[1][:, :7]), k, a), r"part 1 \(full\) has shape \(3, 7, 8, 5\)"),
    (lambda p, k, a: (p, (k[0], k[1][..., :2]), a), r"kernel 1 \(full\) has shape \(3, 3, 5, 2\); expected \(3, 3, 5, 4\)"),
    (lambda p, k, a: (p, k, a[:3]), r"addend has shape \(3,\); expected \(4,\) or \(8, 8, 4\)"),
    (lambda p, k, a: (p, k, a.astype(jnp.float16)), "float32; got an argument of dtype float16"),
])
def test_bad_arguments_are_named_before_any_work(change, message):
    kinds = ("up", "full")
    parts, kernels, addend, _ = _case(kinds, False)
    with pytest.raises(ValueError, match=message):
        _ours(kinds, *change(parts, kernels, addend))


def test_input_gradient_is_computed_only_where_needed(monkeypatch):
    """A constant input (the encoder's images) gets no input gradient: the backward call is told so."""
    kinds = ("full", "up")
    parts, kernels, addend, ct = _case(kinds, False)
    seen = []
    real = onednn._backward

    def spy(ctx, grads, *args, need, **kw):
        seen.append(need)
        return real(ctx, grads, *args, need=need, **kw)

    monkeypatch.setattr(onednn, "_backward", spy)
    ref = jax.grad(lambda k, u: jnp.vdot(_reference(kinds, (parts[0], u), k, addend), ct), (0, 1))(kernels, parts[1])
    got = jax.grad(lambda k, u: jnp.vdot(_ours(kinds, (parts[0], u), k, addend), ct), (0, 1))(kernels, parts[1])
    assert seen == [(False, True)]
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("model", ["keycld", "fc"])
def test_networks_on_onednn_compute_the_xla_networks_function_and_gradients(model):
    xla = KeyCLD("cartpole", model=model, hidden=8)
    ours = dataclasses.replace(xla, conv_backend="onednn")
    params = xla.init(jax.random.PRNGKey(0))
    images = jax.random.uniform(jax.random.PRNGKey(1), (4, 64, 64, 3))
    keypoints = jax.random.uniform(jax.random.PRNGKey(2), (4, 2 * xla.num_keypoints), minval=-0.8, maxval=0.8)

    def loss(m, p):
        kp, _ = m.encode(p, images)
        return jnp.sum(kp ** 2) + jnp.sum(m.render(p, keypoints) ** 2)

    np.testing.assert_allclose(loss(ours, params), loss(xla, params), rtol=1e-5)
    g_ref = jax.grad(lambda p: loss(xla, p))(params)
    g_got = jax.jit(jax.grad(lambda p: loss(ours, p)))(params)
    # a bias before a GroupNorm has zero gradient up to rounding: tolerances scale with the largest gradient
    scale = max(float(jnp.max(jnp.abs(r))) for r in jax.tree.leaves(g_ref))
    for g, r in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(g, r, rtol=2e-3, atol=1e-4 * scale)


def test_resolve_and_bad_backends(monkeypatch):
    with pytest.raises(ValueError, match="'tpu' is not one of auto, xla, onednn"):
        onednn.resolve("tpu")
    assert onednn.resolve("xla") == "xla"
    assert onednn.resolve("auto") == "onednn"  # this CPU, PyTorch installed
    monkeypatch.setattr(onednn, "available", lambda: False)
    assert onednn.resolve("auto") == "xla"
    with pytest.raises(ValueError, match="needs PyTorch"):
        onednn.resolve("onednn")
    with pytest.raises(ValueError, match="conv_backend 'auto' is not one of xla, onednn"):
        KeyCLD("pendulum", conv_backend="auto")
    with pytest.raises(ValueError, match="needs fast_convs=True"):
        KeyCLD("pendulum", conv_backend="onednn", fast_convs=False)


def test_importing_keycld_does_not_import_torch():
    code = "import sys, keycld.train, keycld.model.onednn; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cli_rejects_a_bad_backend_before_any_work(tmp_path):
    r = subprocess.run([sys.executable, "-m", "keycld_agents.cli", "train", "--environment", "pendulum",
                        "--conv_backend", "gpu", "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 2 and "--conv_backend" in r.stderr and "'gpu'" in r.stderr
    assert not (tmp_path / "run").exists()


def test_training_records_the_backend_of_each_epoch(tiny_cache, tmp_path):
    import keycld.train as T
    from keycld.config import TrainConfig

    cfg = TrainConfig(environment="pendulum", control="yes", num_runs=5, num_frames=8, num_hidden_dim=8,
                      num_predicted_steps=2, num_epochs=2)
    T.train(cfg, tmp_path / "a", cache_dir=tiny_cache, progress=False, gif=False, conv_backend="xla")
    cfg3 = dataclasses.replace(cfg, num_epochs=3)
    T.train(cfg3, tmp_path / "a", resume=True, cache_dir=tiny_cache, progress=False, gif=False)
    lines = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [line["conv_backend"] for line in lines] == ["xla", "xla", "onednn"]
    with pytest.raises(ValueError, match="'cuda' is not one of"):
        T.train(cfg, tmp_path / "b", cache_dir=tiny_cache, progress=False, gif=False, conv_backend="cuda")
    assert not (tmp_path / "b").exists()


def test_cli_names_a_backend_this_machine_cannot_run(monkeypatch, tmp_path, capsys):
    from keycld_agents.cli import main

    monkeypatch.setattr(onednn, "available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--environment", "pendulum", "--conv_backend", "onednn", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2
    assert "--conv_backend: conv backend 'onednn' needs PyTorch" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
