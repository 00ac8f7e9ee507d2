"""The U-Nets' convolutions on oneDNN (through PyTorch's CPU kernels), called from jitted JAX.

XLA's CPU convolution kernels run the U-Nets' layers at 1.5–5.7× the time a tuned library needs
for the same convolutions on the same cores (``benchmarks/conv_kernels.py``). This module runs
each ``SplitConv`` layer — its parts' convolutions, their sum and the bias — as one call into
PyTorch's CPU convolution (oneDNN), forward and backward, and everything else of the networks
(GroupNorm, pooling, the Gaussian maps, the losses, Adam) stays in XLA.

The calls are ``jax.experimental.buffer_callback``: PyTorch reads JAX's input buffers and writes
into JAX's output buffers in place, with no copies in between, inside the jitted step. The
function is a ``jax.custom_vjp`` (reverse mode only, like the fast networks; ``jax.jvp`` needs
``fast=False``) and supports ``jax.vmap`` (each vmapped example is convolved in turn). Results
equal XLA's up to float summation order.

PyTorch computes each call on its own thread pool (``torch.get_num_threads()``, by default one
thread per core), next to XLA's; while XLA runs two layers' calls at once (independent branches),
the cores are oversubscribed.

Only for the CPU backend: on a GPU the buffers would cross to the host (``resolve`` never picks
it there). PyTorch is optional (``pip install keycld-gym[onednn]``, or ``torch`` itself); it is
imported on the first call, not with this module.

Layer layout (as ``networks.SplitConv``): every part is (…, N, H, W, C) channels-last, its kernel
HWIO; a ``"full"`` part is convolved 3×3 SAME (kernel (3, 3, C, F)); an ``"up"`` part is
(…, N, H/2, W/2, C), the input the plain network would upsample ×2 (nearest) before its 3×3
convolution, and its kernel is the (2, 2, C, 4F) phase kernel of ``networks._phase_kernel``; the
``addend`` is the bias (F,) or a map (H, W, F) added to every frame.
"""
from __future__ import annotations

import functools
import importlib.util
import itertools

import jax
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.experimental.buffer_callback import buffer_callback

COMPUTE_BACKENDS = ("xla", "onednn")  # what a model computes with
BACKENDS = ("auto", *COMPUTE_BACKENDS)  # what a user may ask for (``resolve``)
KINDS = ("full", "up")


def available() -> bool:
    """True when PyTorch (and with it oneDNN) can be imported."""
    return importlib.util.find_spec("torch") is not None


def resolve(backend: str) -> str:
    """The convolution backend to use: ``"xla"`` or ``"onednn"``.

    ``"auto"`` is ``"onednn"`` when JAX computes on the CPU and PyTorch is installed, else
    ``"xla"``. Raises ValueError for a name not in ``BACKENDS``, and for ``"onednn"`` off the CPU
    or without PyTorch.
    """
    if backend not in BACKENDS:
        raise ValueError(f"conv backend {backend!r} is not one of {', '.join(BACKENDS)}")
    on_cpu = jax.default_backend() == "cpu"
    if backend == "auto":
        return "onednn" if on_cpu and available() else "xla"
    if backend == "onednn":
        if not on_cpu:
            raise ValueError(f"conv backend 'onednn' runs on the CPU only; JAX computes on {jax.default_backend()!r} "
                             "here: use 'xla' or 'auto'")
        if not available():
            raise ValueError("conv backend 'onednn' needs PyTorch: pip install 'keycld-gym[onednn]' "
                             "(or use 'xla' or 'auto')")
    return backend


@functools.cache
def _torch():
    import torch

    return torch


# ---- inside the callbacks: PyTorch views of JAX's buffers --------------------------------------

def _tensor(buffer):
    return _torch().from_dlpack(buffer)


def _examples(t, core: int, lead: tuple[int, ...]) -> list:
    """A (*lead', *core dims) tensor -> one view of its core dims per vmapped example of ``lead``
    (row-major order). ``jax.vmap`` with ``expand_dims`` gives every argument one leading dim per
    vmap level, of size 1 where that argument is not batched: it is broadcast (no copy)."""
    t = t.expand(*lead, *t.shape[t.dim() - core:])
    return [t[idx] for idx in itertools.product(*map(range, lead))]


def _nchw(t):
    """(N, H, W, C) channels-last tensor -> (N, C, H, W) view (PyTorch's channels_last layout)."""
    return t.permute(0, 3, 1, 2)


def _oihw(kernel):
    """(kh, kw, I, O) HWIO -> (O, I, kh, kw) in PyTorch's channels_last layout (a copy; small)."""
    torch = _torch()
    return kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)


def _phase_views(out):
    """(N, 2h, 2w, F) -> {(a, b): (N, h, w, F) view of the output pixels (2i + a, 2j + b)}."""
    m, h, w, f = out.shape
    v = out.reshape(m, h // 2, 2, w // 2, 2, f)
    return {(a, b): v[:, :, a, :, b] for a in (0, 1) for b in (0, 1)}


def _forward(ctx, out, *args, kinds: tuple[str, ...], addend_ndim: int):
    """out (…, N, H, W, F) = Σ_parts conv(part) + addend, for every vmapped example."""
    torch = _torch()
    p = len(kinds)
    o = _tensor(out)
    lead = tuple(o.shape[:-4])
    outs = _examples(o, 4, lead)
    xs = [_examples(_tensor(a), 4, lead) for a in args[:p]]
    ks = [_examples(_tensor(a), 4, lead) for a in args[p:2 * p]]
    adds = _examples(_tensor(args[2 * p]), addend_ndim, lead)
    with torch.no_grad():
        for e, y in enumerate(outs):
            written = False
            for kind, x, k in zip(kinds, xs, ks):
                bias = adds[e] if kind == "full" and addend_ndim == 1 and not written else None
                if kind == "full":
                    z = torch.nn.functional.conv2d(_nchw(x[e]), _oihw(k[e]), bias, padding=1)
                    (_nchw(y).add_ if written else _nchw(y).copy_)(z)
                else:  # up: the 2×2 phase convolution over the zero-padded low-resolution grid
                    h, w = x[e].shape[1:3]
                    z = torch.nn.functional.conv2d(_nchw(x[e]), _oihw(k[e]), padding=1)  # (N, 4F, h+1, w+1)
                    z = z.permute(0, 2, 3, 1).reshape(z.shape[0], h + 1, w + 1, 2, 2, y.shape[-1])
                    for (a, b), view in _phase_views(y).items():
                        (view.add_ if written else view.copy_)(z[:, a:a + h, b:b + w, a, b])
                if not written and bias is None:
                    y.add_(adds[e])
                written = True


def _backward(ctx, grads, *args, kinds: tuple[str, ...], addend_ndim: int, need: tuple[bool, ...]):
    """The gradients of ``_forward`` (args: the parts, the kernels, the output gradient g): for
    each part that ``need``s one, then for each kernel, then for the addend."""
    torch = _torch()
    p = len(kinds)
    grads = [_tensor(b) for b in grads]
    lead = tuple(grads[-1].shape[:grads[-1].dim() - addend_ndim])  # outputs carry every vmapped dim
    gs = _examples(_tensor(args[-1]), 4, lead)
    xs = [_examples(_tensor(a), 4, lead) for a in args[:p]]
    ks = [_examples(_tensor(a), 4, lead) for a in args[p:2 * p]]
    part_grads = iter(grads[:sum(need)])
    dxs = [_examples(next(part_grads), 4, lead) if nd else None for nd in need]
    dks = [_examples(b, 4, lead) for b in grads[sum(need):sum(need) + p]]
    dadd = _examples(grads[-1], addend_ndim, lead)
    with torch.no_grad():
        for e, g in enumerate(gs):
            for i, (kind, x, k) in enumerate(zip(kinds, xs, ks)):
                if kind == "full":
                    gy = _nchw(g)
                else:  # the phase outputs' gradient: zero where no output pixel came from
                    (h, w), f = x[e].shape[1:3], g.shape[-1]
                    phases = torch.zeros((g.shape[0], h + 1, w + 1, 2, 2, f), dtype=g.dtype)
                    for (a, b), view in _phase_views(g).items():
                        phases[:, a:a + h, b:b + w, a, b] = view
                    gy = _nchw(phases.reshape(g.shape[0], h + 1, w + 1, 4 * f))
                dx, dk, _ = torch.ops.aten.convolution_backward(
                    gy, _nchw(x[e]), _oihw(k[e]), None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1,
                    (need[i], True, False))
                if need[i]:
                    _nchw(dxs[i][e]).copy_(dx)
                dks[i][e].copy_(dk.permute(2, 3, 1, 0))
            dadd[e].copy_(g.sum(dim=(0, 1, 2)) if addend_ndim == 1 else g.sum(dim=0))


# ---- the JAX function -----------------------------------------------------------------------

def _shape(x) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def split_conv(kinds: tuple[str, ...], parts: tuple, kernels: tuple, addend: jax.Array) -> jax.Array:
    """Σ_i conv_i(parts[i], kernels[i]) + addend, on oneDNN (see the module docstring for the
    layouts of each kind).

    Args:
        kinds: per part, ``"full"`` or ``"up"``.
        parts: per part, (N, H, W, C_i) (``"full"``) or (N, H/2, W/2, C_i) (``"up"``), float32.
        kernels: per part, (3, 3, C_i, F) (``"full"``) or (2, 2, C_i, 4F) (``"up"``), float32.
        addend: (F,) bias or (H, W, F) map, float32.
    Returns:
        (N, H, W, F) float32.
    Raises ValueError (before any computation) for an unknown kind or shapes that do not fit.
    """
    return _call_forward(kinds, tuple(parts), tuple(kernels), addend)


def _out_shape(kinds, parts, kernels, addend) -> jax.ShapeDtypeStruct:
    """The output's shape, after checking every argument against the others."""
    if not (len(kinds) == len(parts) == len(kernels) >= 1):
        raise ValueError(f"split_conv needs one part and one kernel per kind, got {len(kinds)} kinds, "
                         f"{len(parts)} parts, {len(kernels)} kernels")
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"split_conv part kind {kind!r} is not one of {', '.join(KINDS)}")
    scale = 2 if kinds[0] == "up" else 1
    n, h, w = parts[0].shape[0], scale * parts[0].shape[1], scale * parts[0].shape[2]
    f = kernels[0].shape[3] // (4 if kinds[0] == "up" else 1)
    for i, (kind, x, k) in enumerate(zip(kinds, parts, kernels)):
        grid = (h // 2, w // 2) if kind == "up" else (h, w)
        want_k = (2, 2, x.shape[-1], 4 * f) if kind == "up" else (3, 3, x.shape[-1], f)
        if x.ndim != 4 or tuple(x.shape[:3]) != (n, *grid) or (kind == "up" and (h % 2 or w % 2)):
            raise ValueError(f"split_conv part {i} ({kind}) has shape {tuple(x.shape)}; expected "
                             f"({n}, {grid[0]}, {grid[1]}, C) to give a ({n}, {h}, {w}, {f}) output")
        if tuple(k.shape) != want_k:
            raise ValueError(f"split_conv kernel {i} ({kind}) has shape {tuple(k.shape)}; expected {want_k}")
    if tuple(addend.shape) not in ((f,), (h, w, f)):
        raise ValueError(f"split_conv addend has shape {tuple(addend.shape)}; expected ({f},) or ({h}, {w}, {f})")
    for a in (*parts, *kernels, addend):
        if a.dtype != np.float32:
            raise ValueError(f"split_conv computes in float32; got an argument of dtype {a.dtype}")
    return jax.ShapeDtypeStruct((n, h, w, f), np.float32)


def _call_forward(kinds, parts, kernels, addend):
    call = buffer_callback(functools.partial(_forward, kinds=tuple(kinds), addend_ndim=addend.ndim),
                           _out_shape(kinds, parts, kernels, addend), vmap_method="expand_dims")
    return call(*parts, *kernels, addend)


def _split_conv_fwd(kinds, parts, kernels, addend):
    """With symbolic zeros: every argument leaf is a ``CustomVJPPrimal`` (value, perturbed)."""
    need = tuple(p.perturbed for p in parts)
    parts, kernels, addend = (tuple(p.value for p in parts), tuple(k.value for k in kernels), addend.value)
    out = _call_forward(kinds, parts, kernels, addend)
    return out, (parts, kernels, addend, _need_marks(need))


def _need_marks(need: tuple[bool, ...]) -> tuple:
    """Which parts need an input gradient, carried to the backward pass in the residuals'
    tree structure (residual leaves must be arrays): ``()`` for yes, ``None`` for no."""
    return tuple(() if n else None for n in need)


def _split_conv_bwd(kinds, res, g):
    parts, kernels, addend, marks = res
    need = tuple(m is not None for m in marks)
    if isinstance(g, SymbolicZero):  # nothing downstream depends on the output
        return tuple(None for _ in parts), tuple(None for _ in kernels), None
    shapes = tuple(_shape(x) for x, n in zip(parts, need) if n) + tuple(_shape(k) for k in kernels) + (_shape(addend),)
    call = buffer_callback(functools.partial(_backward, kinds=tuple(kinds), addend_ndim=addend.ndim, need=need),
                           shapes, vmap_method="expand_dims")
    grads = iter(call(*parts, *kernels, g))
    part_grads = tuple(next(grads) if n else None for n in need)
    kernel_grads = tuple(next(grads) for _ in kernels)
    return part_grads, kernel_grads, next(grads)


split_conv.defvjp(_split_conv_fwd, _split_conv_bwd, symbolic_zeros=True)
