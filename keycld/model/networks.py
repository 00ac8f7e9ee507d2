"""Keypoint estimator and renderer networks (Flax linen).

U-Net (the paper's architecture): conv3×3 → GroupNorm(8) → ReLU at widths h (64²), 2h (32²), 4h (16²),
nearest-neighbour upsampling with skip concatenation back to h, final conv3×3.
About 0.54 GFLOP per 64×64 frame forward at h = 32 (encoder) computed the plain way; the
fast path (``SplitConv``) computes the same function with about 0.37 GFLOP: the convolution
of an upsampled input runs at low resolution, and the renderer's constant seed is
convolved once per batch instead of once per frame. The fast path also writes four gradients
by hand where XLA's CPU autodiff is slow (``group_norm_relu``, ``narrow_conv``,
``add_channel_bias``, ``upsampled_conv``); per-layer times against this machine's roofline:
``benchmarks/train_step_layers.py``.
Those are reverse-mode only: forward-mode autodiff (``jax.jvp``, ``jacfwd``) through a network
needs ``fast=False``, which computes the same function with plain JAX operations.
``backend="onednn"`` (fast path only) runs each ``SplitConv`` layer — its convolutions, their
sum and the bias — on PyTorch's oneDNN kernels instead of XLA's (``keycld.model.onednn``);
GroupNorm, pooling and the rest stay in XLA.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from keycld.model import onednn
from keycld.model.keypoints import gaussian_maps


_DN = ("NHWC", "HWIO", "NHWC")
# Rows of the 3×3 kernel that land on low-resolution offsets (-1, 0) for output phase 0 and
# (0, +1) for phase 1 when the input was nearest-neighbour upsampled ×2.
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)


def _conv(x: jnp.ndarray, kernel: jnp.ndarray, padding) -> jnp.ndarray:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DN)


def _pad1(x: jnp.ndarray) -> jnp.ndarray:
    """Zero-pad (N, H, W, C) by one pixel on each side of H and W."""
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


# A 3×3 convolution with at most this many output channels, and 9·C_out ≤ 2·C_in, takes its
# kernel gradient as one dot against the nine shifted copies of the narrow output gradient
# (``narrow_conv``): in the U-Nets, only the last layer, and only where 9·out ≤ 2·h (so not
# at h = 8). On a 2-core CPU this gradient is 2× faster than XLA's for the last layer (32 -> 3)
# at h = 32, but 5× slower for C_in = 3 -> 16, and at h = 16 it makes the whole training step
# 1.6× slower when the 16 -> 16 layers use it; so those layers keep XLA's gradient.
_NARROW_OUT = 8


@jax.custom_vjp
def narrow_conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """3×3 SAME convolution, x (N, H, W, C_in), kernel (3, 3, C_in, C_out) -> (N, H, W, C_out).

    Same function as ``_conv(x, kernel, "SAME")``. Its kernel gradient is one dot,
    [g shifted by each of the 9 taps]^T @ x, which for narrow outputs (see ``_NARROW_OUT``) avoids
    XLA CPU's batch-as-feature transpose of the wide x: about 2× faster forward + backward
    for the U-Nets' last layer (32 -> 2 or 3 channels, 64×64, batch 50).
    """
    return _conv(x, kernel, "SAME")


def _narrow_conv_fwd(x, kernel):
    return _conv(x, kernel, "SAME"), (x, kernel)


def _narrow_conv_bwd(res, g):
    x, kernel = res
    dx = jax.vjp(lambda v: _conv(v, kernel, "SAME"), x)[1](g)[0]
    n, h, w, c_out = g.shape
    c_in = x.shape[-1]
    gp = _pad1(g)
    # tap (r, c) pairs x[i, j] with g[i - r + 1, j - c + 1]
    shifted = jnp.concatenate([gp[:, 2 - r:2 - r + h, 2 - c:2 - c + w] for r in range(3) for c in range(3)], -1)
    # shifted^T @ x, not x^T @ shifted: XLA transposes the dot's left operand, which should be
    # the narrow one
    dk = shifted.reshape(-1, 9 * c_out).T @ x.reshape(-1, c_in)  # (9·C_out, C_in)
    return dx, dk.reshape(3, 3, c_out, c_in).transpose(0, 1, 3, 2)


narrow_conv.defvjp(_narrow_conv_fwd, _narrow_conv_bwd)


def conv3x3(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """3×3 SAME convolution (N, H, W, C_in) -> (N, H, W, C_out), with the faster kernel gradient for its shape."""
    c_in, c_out = kernel.shape[2], kernel.shape[3]
    if c_out <= _NARROW_OUT and 9 * c_out <= 2 * c_in:
        return narrow_conv(x, kernel)
    return _conv(x, kernel, "SAME")


def _phase_kernel(kernel: jnp.ndarray) -> jnp.ndarray:
    """(3, 3, C_in, C_out) -> (2, 2, C_in, 4·C_out): the 2×2 low-resolution kernel of each of the
    four output phases (a, b) of a 3×3 convolution over a nearest-neighbour ×2 upsampled input."""
    taps = jnp.asarray(_PHASE_TAPS)
    c_in, c_out = kernel.shape[2], kernel.shape[3]
    return jnp.einsum("ary,bcx,yxio->rciabo", taps, taps, kernel).reshape(2, 2, c_in, 4 * c_out)


def _interleave_phases(y: jnp.ndarray, c_out: int) -> jnp.ndarray:
    """(N, n+1, n+1, 4·C_out) phase outputs over the padded grid -> (N, 2n, 2n, C_out): output
    pixel (2i + a, 2j + b) is phase (a, b) at window (i + a, j + b)."""
    n = y.shape[1] - 1
    y = y.reshape(*y.shape[:3], 2, 2, c_out)
    rows = [jnp.stack([y[:, a:a + n, b:b + n, a, b] for b in (0, 1)], axis=3) for a in (0, 1)]
    return jnp.stack(rows, axis=2).reshape(y.shape[0], 2 * n, 2 * n, c_out)


@jax.custom_vjp
def upsampled_conv(u: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """conv3×3(SAME)(nearest_upsample×2(u)) computed at low resolution.

    Each output phase (a, b) of the upsampled grid sees a 2×2 low-resolution neighbourhood,
    so one 2×2 convolution with 4·C_out channels replaces the 3×3 one on the 4× larger
    image: 16/36 of the FLOPs, identical result (up to float summation order). Forward and input
    gradient are XLA convolutions; the kernel gradient is one product of the phase gradients
    and the 2×2 patches. (XLA's CPU kernel gradient for a 2×2 window whose padding is part of
    the convolution takes seconds per call at the U-Nets' shapes; for the explicitly padded
    form here, XLA's own gradient and this one make the training step equally fast:
    ``benchmarks/step_variants.py``, ``benchmarks/conv_kernels.py``.)
    Reverse mode only (like ``group_norm_relu``).

    Args:
        u: (N, n, n, C_in); kernel: (3, 3, C_in, C_out).
    Returns:
        (N, 2n, 2n, C_out).
    """
    return _upsampled_conv_fwd(u, kernel)[0]


def _upsampled_conv_fwd(u, kernel):
    y = _conv(_pad1(u), _phase_kernel(kernel), "VALID")  # (N, n+1, n+1, 4·C_out)
    return _interleave_phases(y, kernel.shape[3]), (u, kernel)


def _upsampled_conv_bwd(res, g):
    u, kernel = res
    c_in, c_out = kernel.shape[2], kernel.shape[3]
    n = u.shape[1]
    padded = _pad1(u)
    phases = jax.ShapeDtypeStruct((u.shape[0], n + 1, n + 1, 4 * c_out), g.dtype)
    gy = jax.linear_transpose(lambda y: _interleave_phases(y, c_out), phases)(g)[0]
    k2, k2_vjp = jax.vjp(_phase_kernel, kernel)
    du = jax.vjp(lambda x: _conv(x, k2, "VALID"), padded)[1](gy)[0][:, 1:-1, 1:-1]
    patches = jnp.concatenate([padded[:, r:r + n + 1, c:c + n + 1] for r in (0, 1) for c in (0, 1)], -1)
    # gy^T @ patches, not patches^T @ gy: XLA transposes the dot's left operand, the narrower one
    dk2 = gy.reshape(-1, 4 * c_out).T @ patches.reshape(-1, 4 * c_in)  # (4·C_out, 4·C_in)
    return du, k2_vjp(dk2.T.reshape(2, 2, c_in, 4 * c_out))[0]


upsampled_conv.defvjp(_upsampled_conv_fwd, _upsampled_conv_bwd)


class SplitConv(nn.Module):
    """A 3×3 SAME convolution over the channel concatenation of several inputs, computed per part.

    Parameters are exactly those of ``nn.Conv(features, (3, 3))`` over the concatenated input
    (kernel (3, 3, ΣC, features) and bias), but each part is convolved in its cheapest form:
    ``("full", x)``: (N, H, W, C) as is; ``("up", u)``: (N, H/2, W/2, C) that the plain network
    would upsample first (see ``upsampled_conv``); ``("static", s)``: (H, W, C) shared by the
    batch, convolved once.
    """

    features: int
    fast: bool = True  # False: plain ``_conv`` and bias add (forward-mode differentiable)
    backend: str = "xla"  # "onednn" (fast only): the whole layer in one oneDNN call (``keycld.model.onednn``)

    @nn.compact
    def __call__(self, parts: list[tuple[str, jnp.ndarray]]) -> jnp.ndarray:
        channels = [p.shape[-1] for _, p in parts]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, sum(channels), self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        for kind, _ in parts:
            if kind not in ("full", "up", "static"):
                raise ValueError(f"unknown part kind {kind!r}; allowed: full, up, static")
        starts = np.cumsum([0, *channels[:-1]])
        weights = [kernel[:, :, s:s + c] for s, c in zip(starts, channels)]  # each part's input channels
        if self.backend == "onednn":
            return self._onednn(parts, weights, bias)
        if self.backend != "xla":
            raise ValueError(f"SplitConv backend {self.backend!r} is not one of {', '.join(onednn.COMPUTE_BACKENDS)}")
        out = 0.0
        for (kind, x), w in zip(parts, weights):
            if kind == "full":
                out = out + (conv3x3(x, w) if self.fast else _conv(x, w, "SAME"))
            elif kind == "up":
                out = out + (upsampled_conv(x, w) if self.fast else _conv(_upsample(x), w, "SAME"))
            else:  # static
                out = out + _conv(x[None], w, "SAME")
        return add_channel_bias(out, bias) if self.fast else out + bias

    def _onednn(self, parts, weights, bias):
        if not self.fast:
            raise ValueError("conv backend 'onednn' computes the fast networks' function; it needs fast=True")
        kinds, inputs, kernels, addend = [], [], [], bias
        for (kind, x), w in zip(parts, weights):
            if kind == "static":  # convolved once, in XLA; added to every frame with the bias
                addend = addend + _conv(x[None], w, "SAME")[0]
                continue
            kinds.append(kind)
            inputs.append(x)
            kernels.append(w if kind == "full" else _phase_kernel(w))
        return onednn.split_conv(tuple(kinds), tuple(inputs), tuple(kernels), addend)


@jax.custom_vjp
def add_channel_bias(y: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """y (..., C) + bias (C,); the bias gradient Σ over all leading axes is one dot.

    Autodiff's reduce_sum here becomes XLA CPU's tree reduction (reduce-window), about 4×
    slower than ones @ dy for (50, 64, 64, 32).
    """
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, None


def _add_bias_bwd(_, g):
    return g, _row_sums(g.reshape(1, -1, g.shape[-1]))[0]


add_channel_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def _row_sums(a: jnp.ndarray) -> jnp.ndarray:
    """Σ over rows of (B, M, C) -> (B, C), as a batched ones-vector @ matrix product.

    XLA's CPU reduction loops (tree reduce-windows for large M) run this about 3× slower than
    its dot kernel does. The ones operand comes first so that no operand needs a transpose.
    """
    b, m, _ = a.shape
    return jnp.einsum("bkm,bmc->bc", jnp.ones((b, 1, m), a.dtype), a)


def _channel_sums(a: jnp.ndarray) -> jnp.ndarray:
    """Σ over H, W of (N, H, W, C) -> (N, C)."""
    n, h, w, c = a.shape
    return _row_sums(a.reshape(n, h * w, c))


def _group_mean(per_channel: jnp.ndarray, groups: int, size: int) -> jnp.ndarray:
    """(N, C) channel sums -> (N, C) mean over each channel's group of ``size`` elements."""
    n, c = per_channel.shape
    return jnp.repeat(per_channel.reshape(n, groups, c // groups).sum(-1) / size, c // groups, axis=1)


def _gn_stats(x: jnp.ndarray, groups: int, eps: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-(sample, channel) group mean and 1/σ, (N, C) each (flax's fast variance E[x²] − E[x]²)."""
    n, h, w, c = x.shape
    size = h * w * (c // groups)
    mean = _group_mean(_channel_sums(x), groups, size)
    var = jnp.maximum(_group_mean(_channel_sums(x * x), groups, size) - mean * mean, 0.0)
    return mean, jax.lax.rsqrt(var + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm_relu(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, groups: int, eps: float) -> jnp.ndarray:
    """relu(GroupNorm(x)) with a hand-written gradient; x (N, H, W, C), scale and bias (C,).

    The same function as ``nn.relu(nn.GroupNorm(groups, epsilon=eps)(x))`` (up to float
    summation order). Every reduction over H·W, forward and backward, is a dot (XLA CPU turns
    autodiff's reductions into slow tree reduce-windows), and the backward pass needs only the
    per-channel sums Σ dy and Σ dy·x̂: 2.4× faster than autodiff through flax's GroupNorm for
    the 64×64×32 activations at batch 50. float32 (as the whole model). Reverse mode only:
    forward-mode (``jax.jvp``, ``jacfwd``) needs the plain networks (``fast=False``).
    """
    return _gn_relu_fwd(x, scale, bias, groups, eps)[0]


def _gn_relu_fwd(x, scale, bias, groups, eps):
    mean, inv = _gn_stats(x, groups, eps)
    a = scale * inv
    out = nn.relu(x * a[:, None, None] + (bias - mean * a)[:, None, None])
    return out, (x, out, mean, inv, scale)


def _gn_relu_bwd(groups, eps, res, g):
    x, out, mean, inv, scale = res
    n, h, w, c = x.shape
    size = h * w * (c // groups)
    dy = jnp.where(out > 0, g, 0.0)  # through the ReLU (zero gradient at 0, as jax.nn.relu)
    xhat = (x - mean[:, None, None]) * inv[:, None, None]
    s1, s2 = _channel_sums(dy), _channel_sums(dy * xhat)  # (N, C)
    m1 = _group_mean(scale * s1, groups, size)
    m2 = _group_mean(scale * s2, groups, size)
    dx = inv[:, None, None] * (dy * scale - m1[:, None, None] - xhat * m2[:, None, None])
    return dx, s2.sum(0), s1.sum(0)


group_norm_relu.defvjp(_gn_relu_fwd, _gn_relu_bwd)


class GroupNorm(nn.Module):
    """GroupNorm followed by ReLU, through ``group_norm_relu``.

    Declares exactly the parameters of ``flax.linen.GroupNorm`` (``scale``, ``bias``, (C,)),
    and its class name gives it the same place in the parameter tree (``GroupNorm_<i>``), so
    checkpoints of the fast and the plain networks are interchangeable.
    """

    num_groups: int
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c = x.shape[-1]
        if c % self.num_groups:
            raise ValueError(f"GroupNorm: {c} channels do not split into {self.num_groups} groups")
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return group_norm_relu(x, scale, bias, self.num_groups, self.epsilon)


def _norm_relu(x: jnp.ndarray, fast: bool = True) -> jnp.ndarray:
    groups = min(8, x.shape[-1])
    if fast:
        return GroupNorm(num_groups=groups)(x)
    return nn.relu(nn.GroupNorm(num_groups=groups)(x))


def _block(x: jnp.ndarray, features: int, fast: bool = True, backend: str = "xla") -> jnp.ndarray:
    return _norm_relu(SplitConv(features, fast, backend)([("full", x)]), fast)


def _pool(x: jnp.ndarray) -> jnp.ndarray:
    """2×2 max pooling, stride 2, as a reshape + max (its gradient avoids select-and-scatter)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _upsample(x: jnp.ndarray) -> jnp.ndarray:
    """Nearest-neighbour ×2 by repetition (no generic resize)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)


class UNet(nn.Module):
    """(N, 64, 64, C_in) -> (N, 64, 64, out_channels) logits.

    ``static`` (64, 64, C_s), if given, is a batch-independent input concatenated after x
    (the renderer's seed); its convolution is computed once. ``fast=False`` computes the same
    function the plain way (explicit upsampling and concatenation), for tests.
    """

    hidden: int
    out_channels: int
    fast: bool = True
    backend: str = "xla"  # of the convolutions: "xla" or "onednn" (``SplitConv``)

    @nn.compact
    def __call__(self, x: jnp.ndarray, static: jnp.ndarray | None = None) -> jnp.ndarray:
        h, b = self.hidden, self.backend
        if self.fast:
            first = [("full", x)] + ([("static", static)] if static is not None else [])
            c1 = _norm_relu(SplitConv(h, backend=b)(first))
            c2 = _block(_pool(c1), 2 * h, backend=b)
            c3 = _block(_pool(c2), 4 * h, backend=b)
            u2 = _norm_relu(SplitConv(2 * h, backend=b)([("up", c3), ("full", c2)]))
            u1 = _norm_relu(SplitConv(h, backend=b)([("up", u2), ("full", c1)]))
        else:
            if static is not None:
                x = jnp.concatenate([x, jnp.broadcast_to(static, (*x.shape[:-1], static.shape[-1]))], -1)
            c1 = _block(x, h, fast=False)
            c2 = _block(_pool(c1), 2 * h, fast=False)
            c3 = _block(_pool(c2), 4 * h, fast=False)
            u2 = _block(jnp.concatenate([_upsample(c3), c2], axis=-1), 2 * h, fast=False)
            u1 = _block(jnp.concatenate([_upsample(u2), c1], axis=-1), h, fast=False)
        return SplitConv(self.out_channels, self.fast, b)([("full", u1)])


class KeypointEncoder(nn.Module):
    """Image (N, 64, 64, 3) in [0, 1] -> heatmap logits (N, 64, 64, K)."""

    hidden: int
    num_keypoints: int
    fast: bool = True
    backend: str = "xla"

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        return UNet(self.hidden, self.num_keypoints, self.fast, self.backend)(images)


class Renderer(nn.Module):
    """Keypoints (N, 2K) -> image (N, 64, 64, 3) in [0, 1].

    Gaussian maps (σ in image units) are concatenated with a learned constant seed tensor
    (64, 64, h − K) that carries the static background.
    """

    hidden: int
    num_keypoints: int
    sigma: float = 0.1
    fast: bool = True
    backend: str = "xla"

    @nn.compact
    def __call__(self, keypoints: jnp.ndarray) -> jnp.ndarray:
        maps = gaussian_maps(keypoints, self.sigma)
        seed_ch = max(self.hidden - self.num_keypoints, 1)
        seed = self.param("seed", nn.initializers.normal(1.0), (64, 64, seed_ch))
        return nn.sigmoid(UNet(self.hidden, 3, self.fast, self.backend)(maps, static=seed))


class FCEncoder(nn.Module):
    """Ablation "fc": convolutional down path, then a dense layer to 2K coordinates (tanh)."""

    hidden: int
    num_keypoints: int
    fast: bool = True
    backend: str = "xla"

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        h = self.hidden
        x = _pool(_block(images, h, self.fast, self.backend))
        x = _pool(_block(x, 2 * h, self.fast, self.backend))
        x = _pool(_block(x, 4 * h, self.fast, self.backend))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(4 * h)(x))
        return jnp.tanh(nn.Dense(2 * self.num_keypoints)(x))


class FCRenderer(nn.Module):
    """Ablation "fc": dense layer from 2K coordinates to a 16×16 map, then upsampling convs."""

    hidden: int
    num_keypoints: int
    fast: bool = True
    backend: str = "xla"

    @nn.compact
    def __call__(self, keypoints: jnp.ndarray) -> jnp.ndarray:
        h = self.hidden
        x = nn.relu(nn.Dense(4 * h)(keypoints))
        x = nn.relu(nn.Dense(16 * 16 * h)(x)).reshape(keypoints.shape[0], 16, 16, h)
        x = _block(x, 4 * h, self.fast, self.backend)
        x = _block(_upsample(x), 2 * h, self.fast, self.backend)
        x = _block(_upsample(x), h, self.fast, self.backend)
        return nn.sigmoid(nn.Conv(3, (3, 3), padding="SAME")(x))
