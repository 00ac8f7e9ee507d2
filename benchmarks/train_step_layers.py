"""Where a training step's time goes, per layer, against this machine's roofline.

    python benchmarks/train_step_layers.py [--hidden 16 32] [--repeats 7]

For each layer of the two U-Nets (keypoint encoder: 3 -> K channels; renderer: K Gaussian maps
plus the static seed -> 3 channels), at the shapes of one training step (a batch of 50 frames,
64×64), times the layer's forward and forward + backward (``jax.vjp``: gradients for its input
and its parameters) as the fast networks compute them (``keycld.model.networks``), and
compares each with its roofline bound, max(FLOPs / peak FLOP/s, bytes / peak bandwidth):

* FLOPs: 2 · multiply-adds of the convolution, three times over for forward + backward (input
  and kernel gradients); the elementwise layers (GroupNorm + ReLU, pooling) are counted as 0;
* bytes: the float32 tensors the layer must read and write at least once (forward: input and
  output; backward additionally the output gradient, the input gradient and what the gradient
  reads back: the input for a convolution, input and output for GroupNorm + ReLU);
* peaks, measured in the same run: a 2048² float32 matmul (FLOP/s) and ``2 · x + 1`` on an
  array the size of the largest activation, 50 × 64 × 64 × h float32 (bytes read + written per
  second; larger arrays stream from main memory more slowly, smaller ones from cache faster, so
  a small layer can exceed 100% of this bound).

The rows sum to the networks' layer time; the full training step (both networks, spatial
softmax, Gaussian maps, the dynamics loss, Adam) is timed too, so the remainder is visible.
Writes results/train_step_layers.{json,md}.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = 50  # frames per training step (one 50-frame sequence)
GAUSSIAN_ROW = "Gaussian maps alone (inside the renderer row)"
F32 = 4


def _median_s(fn, args, repeats: int) -> float:
    """Median seconds of the jitted ``fn(*args)`` after one compiling call."""
    import jax

    from _common import median_time

    jax.block_until_ready(fn(*args))  # compile
    return median_time(lambda: jax.block_until_ready(fn(*args)), repeats)[0]


def peaks(repeats: int, stream_elements: int) -> dict:
    """Measured float32 matmul FLOP/s and streaming bandwidth (bytes/s, over an array of
    ``stream_elements`` floats) of this machine."""
    import jax
    import jax.numpy as jnp

    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    mm = _median_s(jax.jit(lambda x: x @ x), (a,), repeats)
    big = jnp.ones((stream_elements,), jnp.float32)
    st = _median_s(jax.jit(lambda x: 2.0 * x + 1.0), (big,), repeats)
    return {"flops_per_s": 2 * n ** 3 / mm, "bytes_per_s": 2 * big.size * F32 / st}


def layers(hidden: int, c_in: int, c_out: int, static: int) -> list[dict]:
    """The fast U-Net's layers, each a dict: name, fn (a function of the input and the
    parameters), shapes (of fn's arguments), flops_fwd, bytes_fwd, bytes_bwd."""
    import jax.numpy as jnp

    from keycld.model import networks as N

    h, b = hidden, BATCH
    rows = []

    def conv(name, res, ci, co, kind="full"):
        # kind "full": 3×3 at res²; "up": input at (res/2)², a 2×2 convolution to 4·co phase channels
        # over the padded (res/2 + 1)² grid
        if kind == "full":
            macs = b * res * res * 9 * ci * co
            x_shape = (b, res, res, ci)
            fn = lambda x, k: N.conv3x3(x, k)
        else:
            lo = res // 2
            macs = b * (lo + 1) ** 2 * 16 * ci * co
            x_shape = (b, lo, lo, ci)
            fn = lambda x, k: N.upsampled_conv(x, k)
        n_in, n_out = math.prod(x_shape), b * res * res * co
        rows.append(dict(name=name, fn=fn, shapes=[x_shape, (3, 3, ci, co)], flops_fwd=2 * macs,
                         bytes_fwd=(n_in + n_out) * F32, bytes_bwd=(2 * n_in + n_out) * F32))

    def gn(name, res, c):
        n = b * res * res * c
        groups = min(8, c)
        fn = lambda x, scale, bias: N.group_norm_relu(x, scale, bias, groups, 1e-6)
        rows.append(dict(name=name, fn=fn, shapes=[(b, res, res, c), (c,), (c,)], flops_fwd=0,
                         bytes_fwd=2 * n * F32, bytes_bwd=4 * n * F32))

    def pool(name, res, c):
        n = b * res * res * c
        rows.append(dict(name=name, fn=lambda x: N._pool(x), shapes=[(b, res, res, c)], flops_fwd=0,
                         bytes_fwd=n * F32 * 5 // 4, bytes_bwd=n * F32 * 9 // 4))

    conv("c1 conv", 64, c_in, h)
    if static:
        macs = 64 * 64 * 9 * static * h
        rows.append(dict(name="c1 static seed conv (once)", fn=lambda s, k: N._conv(s[None], k, "SAME"),
                         shapes=[(64, 64, static), (3, 3, static, h)], flops_fwd=2 * macs,
                         bytes_fwd=(64 * 64 * (static + h)) * F32, bytes_bwd=(64 * 64 * (2 * static + h)) * F32))
    gn("c1 GroupNorm+ReLU", 64, h)
    pool("pool 64->32", 64, h)
    conv("c2 conv", 32, h, 2 * h)
    gn("c2 GroupNorm+ReLU", 32, 2 * h)
    pool("pool 32->16", 32, 2 * h)
    conv("c3 conv", 16, 2 * h, 4 * h)
    gn("c3 GroupNorm+ReLU", 16, 4 * h)
    conv("u2 conv (upsampled c3)", 32, 4 * h, 2 * h, kind="up")
    conv("u2 conv (skip c2)", 32, 2 * h, 2 * h)
    gn("u2 GroupNorm+ReLU", 32, 2 * h)
    conv("u1 conv (upsampled u2)", 64, 2 * h, h, kind="up")
    conv("u1 conv (skip c1)", 64, h, h)
    gn("u1 GroupNorm+ReLU", 64, h)
    conv("out conv", 64, h, c_out)
    return rows


def time_layer(row: dict, repeats: int) -> tuple[float, float]:
    """(forward s, forward + backward s) of one layer at its shapes."""
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    args = [jax.numpy.asarray(rng.normal(size=s).astype(np.float32)) for s in row["shapes"]]
    fn = row["fn"]
    fwd = jax.jit(fn)
    out_shape = jax.eval_shape(fn, *args).shape
    ct = jax.numpy.asarray(rng.normal(size=out_shape).astype(np.float32))

    @jax.jit
    def fwd_bwd(*a):
        y, vjp = jax.vjp(fn, *a)
        return y, vjp(ct)

    return _median_s(fwd, args, repeats), _median_s(fwd_bwd, args, repeats)


def _grad_fn(fn, diff_args: tuple, const_args: tuple) -> tuple:
    """(g, args): ``g(*args)`` is forward + backward of ``fn(*diff_args, *const_args)``
    (gradients for ``diff_args`` only, against a fixed random cotangent)."""
    import jax
    import numpy as np

    rng = np.random.default_rng(1)
    ct = jax.tree_util.tree_map(lambda o: jax.numpy.asarray(rng.normal(size=o.shape).astype(np.float32)),
                                jax.eval_shape(fn, *diff_args, *const_args))

    def fwd_bwd(d, c, cotangent):
        y, vjp = jax.vjp(lambda *a: fn(*a, *c), *d)
        return y, vjp(cotangent)

    return fwd_bwd, (diff_args, const_args, ct)


def _grad_s(fn, diff_args: tuple, const_args: tuple, repeats: int) -> float:
    """Median seconds of forward + backward of ``fn(*diff_args, *const_args)`` (gradients for
    ``diff_args`` only, against a fixed random cotangent), jitted."""
    import jax

    g, args = _grad_fn(fn, diff_args, const_args)
    return _median_s(jax.jit(g), args, repeats)


def network_grads(environment: str, hidden: int) -> dict[str, tuple]:
    """The two networks' forward + backward as one training step computes them: name ->
    (fn, args) with ``fn(*args)`` returning (output, gradients) for a fixed random cotangent;
    encoder: gradients for its parameters (the frames are data); renderer: for its parameters
    and the keypoints (Gaussian maps included)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from keycld.config import TrainConfig
    from keycld.model.keycld import KeyCLD
    from keycld.train import init_state

    cfg = TrainConfig(environment=environment, num_hidden_dim=hidden)
    model = KeyCLD.from_config(cfg)
    p = init_state(cfg, model).params
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(size=(BATCH, 64, 64, 3)).astype(np.float32))
    kp = jnp.asarray(rng.uniform(-0.5, 0.5, (BATCH, 2 * model.num_keypoints)).astype(np.float32))
    enc, ren = model._encoder(), model._renderer()
    return {"encoder": _grad_fn(lambda q, im: enc.apply(q, im), (p["encoder"],), (images,)),
            "renderer": _grad_fn(lambda q, x: ren.apply(q, x), (p["renderer"], kp), ())}


def components(environment: str, hidden: int, horizons: dict[str, int], repeats: int) -> list[tuple[str, float]]:
    """Forward + backward seconds of each part of one training step (one 50-frame sequence)
    as the step composes them: the two networks whole (jitted as one function each), the
    keypoint head (dihedral augmentation, spatial softmax), the Gaussian maps, the loss terms,
    the dynamics loss at each loss horizon of ``horizons`` (role -> steps) and the optimiser
    update. The first horizon is the step's own (``benchmarks/train_step.py`` times the paper's, 4)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from keycld.config import TrainConfig
    from keycld.losses import dynamics_loss, heatmap_bce
    from keycld.model.keycld import KeyCLD
    from keycld.model.keypoints import augment, gaussian_maps, spatial_softmax, unaugment
    from keycld.train import init_state, make_optimizer

    cfg = TrainConfig(environment=environment, num_hidden_dim=hidden)
    model = KeyCLD.from_config(cfg)
    state = init_state(cfg, model)
    p = state.params
    rng = np.random.default_rng(0)
    k = model.num_keypoints
    images = jnp.asarray(rng.uniform(size=(BATCH, 64, 64, 3)).astype(np.float32))
    transform = jnp.asarray(rng.integers(0, 8, BATCH))
    logits = jnp.asarray(rng.normal(size=(BATCH, 64, 64, k)).astype(np.float32))
    kp = jnp.asarray(rng.uniform(-0.5, 0.5, (BATCH, 2 * k)).astype(np.float32))
    action = jnp.asarray(rng.uniform(-1, 1, (model.num_actions,)).astype(np.float32))
    tx = make_optimizer(cfg)
    grads = jax.tree_util.tree_map(jnp.ones_like, p)

    @jax.jit
    def adam(params, opt_state, g):
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    nets = {name: _median_s(jax.jit(fn), fn_args, repeats) for name, (fn, fn_args) in network_grads(environment, hidden).items()}
    parts = [
        ("encoder network", nets["encoder"]),
        ("augment the frames (forward only)", _median_s(jax.jit(augment), (images, transform), repeats)),
        ("un-augment + spatial softmax", _grad_s(lambda lg, tr: spatial_softmax(unaugment(lg, tr)),
                                                 (logits,), (transform,), repeats)),
        ("renderer network (from keypoints, Gaussian maps included)", nets["renderer"]),
        (GAUSSIAN_ROW, _grad_s(lambda x: gaussian_maps(x, model.sigma), (kp,), (), repeats)),
        ("reconstruction + BCE terms",
         _grad_s(lambda r, pr, x, im: jnp.sum((r - im) ** 2) + heatmap_bce(pr, x, model.sigma),
                 (images, jax.nn.softmax(logits.reshape(BATCH, -1, k), axis=1).reshape(logits.shape), kp),
                 (images,), repeats)),
        ("gradient clip + Adam + apply", _median_s(adam, (p, state.opt_state, grads), repeats)),
    ]
    for role, n in horizons.items():
        parts.append((f"dynamics loss, {role}: {n} steps from each of {BATCH - 1 - n} starts",
                      _grad_s(lambda q, x, n=n: dynamics_loss(model, {"dynamics": q}, x, action, n),
                              (p["dynamics"], kp), (), repeats)))
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    import keycld  # noqa: F401  (applies the XLA flag before jax starts)
    from _common import machine, write_results
    from train_step import measure

    from keycld.config import TrainConfig, preset_fields

    data = {"machine": machine(), "peaks": {}, "batch": BATCH, "results": []}
    table, peak_words = [], []
    k = 1  # pendulum: one keypoint (the layer costs hardly depend on K)
    for h in args.hidden:
        pk = data["peaks"][str(h)] = peaks(args.repeats, BATCH * 64 * 64 * h)
        peak_words.append(f"h = {h}: matmul {pk['flops_per_s'] / 1e9:.0f} GFLOP/s, streaming "
                          f"{pk['bytes_per_s'] / 1e9:.1f} GB/s")
        nets = {"encoder": layers(h, 3, k, 0), "renderer": layers(h, k, 3, max(h - k, 1))}
        totals = {}
        for net, rows in nets.items():
            total = 0.0
            for row in rows:
                fwd_s, fb_s = time_layer(row, args.repeats)
                flops = 3 * row["flops_fwd"]
                nbytes = row["bytes_fwd"] + row["bytes_bwd"]
                bound = max(flops / pk["flops_per_s"], nbytes / pk["bytes_per_s"])
                limit = "FLOP" if flops / pk["flops_per_s"] >= nbytes / pk["bytes_per_s"] else "memory"
                rec = dict(hidden=h, network=net, layer=row["name"], fwd_s=fwd_s, fwd_bwd_s=fb_s,
                           gflop=flops / 1e9, mbytes=nbytes / 1e6, bound_s=bound, bound_by=limit)
                data["results"].append(rec)
                total += fb_s
                table.append([str(h), net, row["name"], f"{fwd_s * 1e3:.1f}", f"{fb_s * 1e3:.1f}",
                              f"{flops / 1e9:.2f}", f"{flops / fb_s / 1e9:.0f}" if flops else "",
                              f"{nbytes / fb_s / 1e9:.1f}", f"{bound * 1e3:.1f} ({limit})",
                              f"{bound / fb_s:.0%}"])
                print(table[-1], flush=True)
            totals[net] = total
        step_s = measure("pendulum", h, "xla", args.repeats)["step_s"]  # the whole training step (XLA convs)
        layer_s = sum(totals.values())
        data["results"].append(dict(hidden=h, layers_fwd_bwd_s=layer_s, step_s=step_s, **{f"{n}_s": t for n, t in totals.items()}))
        table.append([str(h), "both", "**sum of layers** (full step)", "", f"{layer_s * 1e3:.1f} ({step_s * 1e3:.1f})",
                      "", "", "", "", ""])
        preset = preset_fields("cpu", "pendulum")
        horizons = {"paper (the step's own)": TrainConfig().num_predicted_steps,
                    "cpu preset, main stage": preset["num_predicted_steps"],
                    "cpu preset, refine stage": preset["refine_num_predicted_steps"]}
        parts = components("pendulum", h, horizons, args.repeats)
        for name, sec in parts:
            data["results"].append(dict(hidden=h, part=name, fwd_bwd_s=sec))
            table.append([str(h), "step part", name, "", f"{sec * 1e3:.1f}", "", "", "", "", f"{sec / step_s:.0%} of step"])
            print(table[-1], flush=True)
        # the step's own parts: not the Gaussian maps again (the renderer row holds them) nor the
        # dynamics losses at the preset's longer horizons
        own = sum(sec for name, sec in parts[:len(parts) - len(horizons) + 1] if name != GAUSSIAN_ROW)
        table.append([str(h), "step part", "**sum of parts** (full step)", "", f"{own * 1e3:.1f} ({step_s * 1e3:.1f})",
                      "", "", "", "", f"{own / step_s:.0%} of step"])
    notes = (f"`python benchmarks/train_step_layers.py --hidden {' '.join(map(str, args.hidden))} --repeats {args.repeats}`: "
             f"median of {args.repeats} jitted calls per layer, batch {BATCH} frames of 64×64, float32. Peaks measured "
             f"in the same run ({'; '.join(peak_words)}; streaming over one h-channel activation). "
             "'bound' = max(FLOPs / peak FLOP/s, bytes / peak bandwidth) for forward + backward, and which of the two "
             "it is; '% of bound' = bound / measured time. The last row of each width compares the layers' sum with "
             "a full training step (both networks plus softmax, Gaussian maps, dynamics loss and Adam). The 'step part' "
             "rows time the step's parts whole, as it composes them (each network jitted as one function, gradients "
             "for parameters only where the step needs no more); '% of step' is against the full step, whose "
             "dynamics loss has the paper's horizon (4 steps); the cpu preset's horizons are the further "
             "dynamics-loss rows.")
    md = write_results("train_step_layers", data, table,
                       ["h", "network", "layer", "fwd ms", "fwd+bwd ms", "GFLOP (f+b)", "GFLOP/s", "GB/s",
                        "bound ms", "% of bound"], notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
