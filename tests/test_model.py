"""Model pieces: networks, augmentation, constraints, dynamics and integrators."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keycld.model import constraints as C
from keycld.systems import get as get_system
from keycld.model.dynamics import Dynamics
from keycld.model.integrators import rollout
from keycld.model.keycld import KeyCLD
from keycld.model.keypoints import augment, gaussian_maps, spatial_softmax, unaugment
from keycld.model.networks import (GroupNorm, UNet, _conv, _upsample, add_channel_bias, conv3x3,
                                   group_norm_relu, narrow_conv, upsampled_conv)

jax.config.update("jax_enable_x64", False)


def test_augment_unaugment_identity_and_dihedral():
    imgs = jnp.asarray(np.random.default_rng(0).random((8, 64, 64, 3)), jnp.float32)
    t = jnp.arange(8)
    aug = augment(imgs, t)
    np.testing.assert_array_equal(unaugment(aug, t), imgs)
    np.testing.assert_array_equal(aug[0], imgs[0])
    np.testing.assert_array_equal(aug[1], np.rot90(imgs[1], 1))
    np.testing.assert_array_equal(aug[6], np.rot90(imgs[6], 2)[:, ::-1])
    assert len({np.asarray(augment(imgs[:1].repeat(8, 0), t)[k]).tobytes() for k in range(8)}) == 8


def test_spatial_softmax_finds_peak_and_gaussian_roundtrip():
    kp = jnp.array([[0.3, -0.2, -0.5, 0.6]])
    logits = 50.0 * gaussian_maps(kp, 0.1)
    _, est = spatial_softmax(logits)
    np.testing.assert_allclose(est, kp, atol=0.02)
    # image orientation: y up, x right
    maps = gaussian_maps(jnp.array([[1.0, 1.0]]), 0.1)
    assert maps[0, 0, -1, 0] > 0.99  # top-right pixel


@pytest.mark.parametrize("static", [False, True])
def test_fast_unet_equals_plain_unet(static):
    """The SplitConv path computes the plain U-Net's function with the same parameters."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.random((2, 64, 64, 3)), jnp.float32)
    s = jnp.asarray(rng.random((64, 64, 5)), jnp.float32) if static else None
    fast, plain = UNet(8, 2, True), UNet(8, 2, False)
    params = fast.init(jax.random.PRNGKey(0), x, s)
    # float32 summation order differs (GroupNorm statistics as dots): ~2e-5 on outputs of ~1
    np.testing.assert_allclose(fast.apply(params, x, s), plain.apply(params, x, s), atol=1e-4)


def test_fast_unet_gradients_equal_plain_unet():
    """The hand-written gradients of the fast path (GroupNorm+ReLU, narrow and upsampled convs,
    biases) are
    autodiff's through the plain network. h = 16 puts two channels in each of the 8 groups, so
    every conv bias has a real gradient (with one channel per group GroupNorm cancels it)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.random((3, 64, 64, 3)), jnp.float32)
    s = jnp.asarray(rng.random((64, 64, 4)), jnp.float32)
    fast, plain = UNet(16, 3, True), UNet(16, 3, False)
    params = fast.init(jax.random.PRNGKey(0), x, s)
    target = jnp.asarray(rng.normal(size=(3, 64, 64, 3)), jnp.float32)
    loss = lambda net: (lambda p: jnp.sum((jnp.tanh(net.apply(p, x, s)) - target) ** 2))
    g_fast, g_plain = jax.grad(loss(fast))(params), jax.grad(loss(plain))(params)
    leaves = jax.tree_util.tree_leaves_with_path(g_plain)
    assert len(leaves) == len(jax.tree_util.tree_leaves(g_fast))
    for (path, b), a in zip(leaves, jax.tree_util.tree_leaves(g_fast)):
        scale = float(jnp.max(jnp.abs(b)))
        assert scale > 0, jax.tree_util.keystr(path)
        np.testing.assert_allclose(a, b, atol=1e-3 * scale, err_msg=jax.tree_util.keystr(path))


def test_group_norm_relu_matches_flax():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(1.0, 2.0, (2, 8, 8, 16)), jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, 16), jnp.float32)
    bias = jnp.asarray(rng.normal(size=16), jnp.float32)
    g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    ref = lambda x, s, b: nn.relu(nn.GroupNorm(num_groups=4).apply({"params": {"scale": s, "bias": b}}, x))
    ours = lambda x, s, b: group_norm_relu(x, s, b, 4, 1e-6)
    np.testing.assert_allclose(ours(x, scale, bias), ref(x, scale, bias), atol=1e-5)
    grads = [jax.grad(lambda *a: jnp.sum(f(*a) * g), (0, 1, 2))(x, scale, bias) for f in (ours, ref)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # under vmap with unbatched parameters, as the training loss runs it
    xs = jnp.stack([x, 2.0 * x + 0.3])
    gs = jnp.stack([g, -g])
    per_seq = [jax.grad(lambda x, s, b: jnp.sum(jax.vmap(f, (0, None, None))(x, s, b) * gs), (0, 1, 2))(xs, scale, bias)
               for f in (ours, ref)]
    for a, b in zip(*per_seq):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="do not split into 5 groups"):
        GroupNorm(num_groups=5).init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("conv", [narrow_conv, conv3x3])
@pytest.mark.parametrize("c_out", [2, 3, 24])
def test_conv_gradients_match_xla(conv, c_out):
    """narrow_conv's hand-written kernel gradient (and conv3x3's choice) against XLA's."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 16)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 16, c_out)), jnp.float32)
    b = jnp.asarray(rng.normal(size=c_out), jnp.float32)
    f1 = lambda x, w, b: jnp.sum(jnp.sin(add_channel_bias(conv(x, w), b)))
    f2 = lambda x, w, b: jnp.sum(jnp.sin(_conv(x, w, "SAME") + b))
    np.testing.assert_allclose(f1(x, w, b), f2(x, w, b), rtol=1e-5)
    for a, b_ in zip(jax.grad(f1, (0, 1, 2))(x, w, b), jax.grad(f2, (0, 1, 2))(x, w, b)):
        np.testing.assert_allclose(a, b_, rtol=1e-4, atol=1e-4)


def test_upsampled_conv_gradients_match_plain():
    rng = np.random.default_rng(2)
    u = jnp.asarray(rng.random((2, 8, 8, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 5, 4)), jnp.float32)
    np.testing.assert_allclose(upsampled_conv(u, w), _conv(_upsample(u), w, "SAME"), rtol=1e-5, atol=1e-5)
    f1 = lambda u, w: jnp.sum(upsampled_conv(u, w) ** 2)
    f2 = lambda u, w: jnp.sum(_conv(_upsample(u), w, "SAME") ** 2)
    for a, b in zip(jax.grad(f1, (0, 1))(u, w), jax.grad(f2, (0, 1))(u, w)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    # as training uses it: vmapped over sequences with a shared kernel
    us = jnp.stack([u, 2 * u[::-1]])
    g1 = jax.grad(lambda w: jnp.sum(jax.vmap(lambda v: upsampled_conv(v, w))(us) ** 2))(w)
    g2 = jax.grad(lambda w: jnp.sum(jax.vmap(lambda v: _conv(_upsample(v), w, "SAME"))(us) ** 2))(w)
    np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-3)


def _on_manifold(environment, key):
    """A random configuration satisfying Φ(x) = 0 and a random tangent velocity."""
    k1, k2, k3 = jax.random.split(key, 3)
    a1, a2 = jax.random.uniform(k1, (2,), minval=-np.pi, maxval=np.pi)
    if environment == "pendulum":
        x = 0.5 * jnp.array([jnp.sin(a1), jnp.cos(a1)])
    elif environment == "cartpole":
        cart = jax.random.uniform(k3, (), minval=-0.5, maxval=0.5)
        x = jnp.array([cart, 0.0, cart + 0.5 * jnp.sin(a1), 0.5 * jnp.cos(a1)])
    else:
        p1 = 0.3 * jnp.array([jnp.sin(a1), jnp.cos(a1)])
        x = jnp.concatenate([p1, p1 + 0.3 * jnp.array([jnp.sin(a2), jnp.cos(a2)])])
    xd = jax.random.normal(k2, x.shape)
    return x, xd


@pytest.mark.parametrize("environment", ["pendulum", "cartpole", "acrobot"])
def test_velocity_projection_in_tangent_space(environment):
    for seed in range(5):
        x, xd = _on_manifold(environment, jax.random.PRNGKey(seed))
        x = x + 0.01 * jax.random.normal(jax.random.PRNGKey(100 + seed), x.shape)  # also off-manifold
        phi = get_system(environment).constraint
        p = C.project_velocity(phi, x, xd)
        np.testing.assert_allclose(C.jacobian(phi, x) @ p, 0.0, atol=1e-5)
        np.testing.assert_allclose(C.project_velocity(phi, x, p), p, atol=1e-5)  # idempotent
        q = C.project_position(phi, x)
        np.testing.assert_allclose(phi(q), 0.0, atol=1e-5)


def _scaled_dynamics(environment, seed, scale):
    dyn = Dynamics(get_system(environment), "keycld", 16)
    params = dyn.init(jax.random.PRNGKey(seed))
    # a non-trivial random potential: the default init (std 0.01) is nearly flat
    params = jax.tree_util.tree_map_with_path(
        lambda path, v: v * scale if "potential_net" in jax.tree_util.keystr(path) else v, params)
    return dyn, params


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), environment=st.sampled_from(["pendulum", "cartpole", "acrobot"]))
def test_constrained_dynamics_conserve_constraint_and_energy(seed, environment):
    """No input: Φ stays ≈ 0 and the total energy is conserved (fine RK4, random potential)."""
    dyn, params = _scaled_dynamics(environment, seed, 30.0)
    x, xd = _on_manifold(environment, jax.random.PRNGKey(seed))
    xd = 0.5 * dyn.project_velocity(x, xd)
    u = jnp.zeros(dyn.system.action_dim)
    accel = jax.jit(lambda a, b: dyn.acceleration(params, a, b, u))
    xs, xds = rollout(accel, x, xd, 0.01, 100, "rk4", substeps=4)  # 1 s
    res = jax.vmap(dyn.phi)(xs)
    assert float(jnp.abs(res).max()) < 1e-3
    e0 = float(dyn.energy(params, x, xd))
    e = np.asarray(jax.vmap(lambda a, b: dyn.energy(params, a, b))(xs, xds))
    scale = max(abs(e0), float(0.5 * jnp.sum(dyn.masses(params) * xd ** 2)), 1e-3)
    assert np.max(np.abs(e - e0)) / scale < 1e-3


def test_unconstrained_ablation_leaves_manifold_and_node2_runs():
    x, xd = _on_manifold("pendulum", jax.random.PRNGKey(0))
    for kind in ("no_constraint", "node2"):
        dyn = Dynamics(get_system("pendulum"), kind, 8)
        params = dyn.init(jax.random.PRNGKey(0))
        a = dyn.acceleration(params, x, xd, jnp.ones(1))
        assert a.shape == (2,) and bool(jnp.all(jnp.isfinite(a)))
    with pytest.raises(ValueError, match="only for Lagrangian"):
        Dynamics(get_system("pendulum"), "node2", 8).potential({}, x)
    with pytest.raises(ValueError, match="unknown dynamics 'ode'"):
        Dynamics(get_system("pendulum"), "ode", 8)


@pytest.mark.parametrize("solver", ["euler", "rk4", "dopri"])
def test_integrators_on_harmonic_oscillator(solver):
    accel = lambda x, xd: -x
    xs, _ = rollout(accel, jnp.array([1.0]), jnp.array([0.0]), 0.01, 100, solver)
    tol = {"euler": 2e-2, "rk4": 1e-6, "dopri": 1e-4}[solver]
    assert abs(float(xs[-1, 0]) - np.cos(1.0)) < tol


@pytest.mark.parametrize("model", ["keycld", "no_constraint", "node2", "fc"])
def test_models_predict_shapes(model):
    m = KeyCLD("cartpole", model=model, hidden=8)
    params = m.init(jax.random.PRNGKey(0))
    frames = jnp.zeros((6, 64, 64, 3))
    pred, xs = m.predict(params, frames, jnp.zeros(2))
    assert pred.shape == (4, 64, 64, 3) and xs.shape == (4, 4)
    assert float(pred.min()) >= 0 and float(pred.max()) <= 1


def test_forward_mode_through_plain_networks_matches_reverse_mode_of_fast_ones():
    """fast_convs=False gives jax.jvp; its directional derivative agrees with the fast path's
    hand-written reverse mode (<u, J v> both ways)."""
    import dataclasses

    fast = KeyCLD("cartpole", hidden=8)
    plain = dataclasses.replace(fast, fast_convs=False)
    params = fast.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(6)
    kp = jnp.asarray(rng.uniform(-0.5, 0.5, (2, 4)), jnp.float32)
    v = jnp.asarray(rng.normal(size=kp.shape), jnp.float32)
    u = jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32)
    _, jv = jax.jvp(lambda k: plain.render(params, k), (kp,), (v,))
    _, vjp = jax.vjp(lambda k: fast.render(params, k), kp)
    np.testing.assert_allclose(jnp.sum(u * jv), jnp.sum(vjp(u)[0] * v), rtol=1e-3)
