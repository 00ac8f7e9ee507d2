"""The training step's convolutions: XLA's CPU kernels against a tuned CPU library, shape by shape.

    python benchmarks/conv_kernels.py [--hidden 16 32] [--repeats 7]

Every convolution of one training step (batch 50 frames of 64×64, float32, the pendulum: one
keypoint), in the form the fast U-Nets compute it (``keycld.model.networks``): a 3×3 SAME
convolution at its resolution, or, for the input that the plain network would upsample, the
2×2 convolution to four phase outputs over the padded low-resolution grid. Each is timed
alone, in the same run, by

* XLA (this jax, with keycld's XLA flag): the convolution as a bare ``lax.conv_general_dilated``
  (3×3, or the 2×2 phase form), its forward, input gradient and kernel gradient each jitted
  alone (the kernel XLA picks for that one op); and what the step runs, as one jitted ``jax.vjp``
  of the fast network's function for that layer (``conv3x3``, which takes the hand-written
  ``narrow_conv`` gradient for the last layer, or ``upsampled_conv``, with its hand-written
  kernel gradient; the bare 2×2 phase form pads first and convolves VALID, as the network does);
* PyTorch's CPU convolution (oneDNN), channels-last, all cores: forward + both gradients
  (``torch.autograd.grad``), the reference for what a tuned convolution library reaches on the
  same shape on this machine;
* both libraries' 2048² float32 matmul (the FLOP/s peak), at the start and at the end of the run.

Each row times what the step computes (the encoder's first layer needs no input gradient); the
last rows sum each width's convolutions as the step runs them (shapes both networks use count
twice).
Writes results/conv_kernels.{json,md}.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = 50
KEYPOINTS = 1  # pendulum


def convolutions(h: int) -> list[dict]:
    """The step's convolutions at width ``h``: name, networks using it, input grid, channels,
    kernel size, padding (per side), and whether the step needs its input gradient."""
    k = KEYPOINTS

    def c(name, nets, grid, c_in, c_out, size=3, input_grad=True):
        return dict(name=name, nets=nets, grid=grid, c_in=c_in, c_out=c_out, size=size, pad=1,
                    input_grad=input_grad)

    return [
        c("c1 (images)", ["encoder"], 64, 3, h, input_grad=False),
        c("c1 (Gaussian maps)", ["renderer"], 64, k, h),
        c("c2", ["encoder", "renderer"], 32, h, 2 * h),
        c("c3", ["encoder", "renderer"], 16, 2 * h, 4 * h),
        c("u2 upsampled c3 (2×2 phases)", ["encoder", "renderer"], 16, 4 * h, 4 * 2 * h, size=2),
        c("u2 skip c2", ["encoder", "renderer"], 32, 2 * h, 2 * h),
        c("u1 upsampled u2 (2×2 phases)", ["encoder", "renderer"], 32, 2 * h, 4 * h, size=2),
        c("u1 skip c1", ["encoder", "renderer"], 64, h, h),
        c("out (heatmaps)", ["encoder"], 64, h, k),
        c("out (image)", ["renderer"], 64, h, 3),
    ]


def out_grid(conv: dict) -> int:
    """Side of the convolution's output grid (its input padded by ``pad`` on each side)."""
    return conv["grid"] + 2 * conv["pad"] - conv["size"] + 1


def flops(conv: dict) -> float:
    """Forward FLOPs (2 · multiply-adds) of a convolution over a batch."""
    out = out_grid(conv)
    return 2.0 * BATCH * out * out * conv["size"] ** 2 * conv["c_in"] * conv["c_out"]


def time_xla(conv: dict, repeats: int) -> dict:
    """Seconds of the bare XLA convolution's forward, input gradient and kernel gradient (each
    jitted alone) and, as "step", of the fast network's function for this layer, forward and the
    gradients the step needs as one jitted vjp."""
    import jax
    import numpy as np

    from _common import median_time
    from keycld.model import networks

    rng = np.random.default_rng(0)
    g, s, out = conv["grid"], conv["size"], out_grid(conv)
    x = jax.numpy.asarray(rng.normal(size=(BATCH, g, g, conv["c_in"])).astype(np.float32))
    w = jax.numpy.asarray(rng.normal(size=(s, s, conv["c_in"], conv["c_out"])).astype(np.float32))
    ct = jax.numpy.asarray(rng.normal(size=(BATCH, out, out, conv["c_out"])).astype(np.float32))

    def f(x, w):
        # as the networks pad: SAME for 3×3; the 2×2 phase form pads first, then convolves VALID
        # (XLA's kernel gradient for a 2×2 window with the padding inside the convolution is
        # another, far slower, kernel)
        if s == 3:
            return networks._conv(x, w, "SAME")
        return networks._conv(networks._pad1(x), w, "VALID")

    # the step's form: a 3×3 kernel; the phase form's input is the low-resolution grid it upsamples
    layer = networks.conv3x3 if s == 3 else networks.upsampled_conv
    w3 = jax.numpy.asarray(rng.normal(size=(3, 3, conv["c_in"], conv["c_out"] // (1 if s == 3 else 4)))
                           .astype(np.float32))
    ct_step = jax.numpy.asarray(rng.normal(size=jax.eval_shape(layer, x, w3).shape).astype(np.float32))

    def step(x, w, ct):  # the output is returned too, or XLA would drop the forward convolution
        if conv["input_grad"]:
            y, vjp = jax.vjp(layer, x, w)
        else:
            y, vjp = jax.vjp(lambda v: layer(x, v), w)
        return y, vjp(ct)

    fns = {"fwd": (lambda x, w, ct: f(x, w), (x, w, ct)),
           "dx": (lambda x, w, ct: jax.vjp(lambda v: f(v, w), x)[1](ct)[0], (x, w, ct)),
           "dw": (lambda x, w, ct: jax.vjp(lambda v: f(x, v), w)[1](ct)[0], (x, w, ct)),
           "step": (step, (x, w3, ct_step))}
    res = {}
    for name, (fn, args) in fns.items():
        jf = jax.jit(fn)
        jax.block_until_ready(jf(*args))
        res[name] = median_time(lambda: jax.block_until_ready(jf(*args)), repeats)[0]
    return res


def time_torch(conv: dict, repeats: int) -> float:
    """Seconds of PyTorch's forward + weight gradient, and input gradient where the step needs
    it (``conv["input_grad"]``), channels-last."""
    import torch

    from _common import median_time

    g, s, p = conv["grid"], conv["size"], conv["pad"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, conv["c_in"], g, g, generator=gen).to(memory_format=torch.channels_last)
    x.requires_grad_(conv["input_grad"])
    w = torch.randn(conv["c_out"], conv["c_in"], s, s, generator=gen).to(memory_format=torch.channels_last).requires_grad_()
    out = out_grid(conv)
    ct = torch.randn(BATCH, conv["c_out"], out, out, generator=gen).to(memory_format=torch.channels_last)

    def step():
        y = torch.nn.functional.conv2d(x, w, padding=p)
        torch.autograd.grad(y, [x, w] if conv["input_grad"] else [w], ct)

    step()
    return median_time(step, repeats)[0]


def matmul_peaks(repeats: int) -> dict:
    """FLOP/s of a 2048² float32 matmul in each library."""
    import jax
    import torch

    from _common import median_time

    n = 2048
    a = jax.numpy.ones((n, n), jax.numpy.float32)
    mm = jax.jit(lambda v: v @ v)
    jax.block_until_ready(mm(a))
    t_xla = median_time(lambda: jax.block_until_ready(mm(a)), repeats)[0]
    b = torch.ones(n, n)
    b @ b
    t_torch = median_time(lambda: b @ b, repeats)[0]
    return {"xla": 2 * n ** 3 / t_xla, "torch": 2 * n ** 3 / t_torch}


def main() -> None:
    from keycld.cliutil import StrictParser, positive_int

    ap = StrictParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=positive_int, nargs="+", default=[16, 32])
    ap.add_argument("--repeats", type=positive_int, default=7)
    args = ap.parse_args()
    for h in args.hidden:
        if h % 8:
            ap.error(f"--hidden {h}: must be a multiple of 8 (GroupNorm's 8 groups)")
    import keycld  # noqa: F401  (applies the XLA flag before jax starts)
    import torch

    from _common import machine, write_results

    torch.set_num_threads(os.cpu_count() or 1)
    peaks = matmul_peaks(args.repeats)
    data = {"machine": machine(), "torch": torch.__version__, "batch": BATCH, "matmul_flops_per_s": peaks,
            "results": []}
    table = []
    for h in args.hidden:
        total = {"xla": 0.0, "torch": 0.0, "flops": 0.0}
        for conv in convolutions(h):
            t = time_xla(conv, args.repeats)
            t_torch = time_torch(conv, args.repeats)
            fl = flops(conv)
            # as the step runs it: the input gradient only where the step needs it
            step_fl = (3 if conv["input_grad"] else 2) * fl
            step_xla = t["step"]
            uses = len(conv["nets"])
            total["xla"] += uses * step_xla
            total["torch"] += uses * t_torch
            total["flops"] += uses * step_fl
            data["results"].append(dict(conv, hidden=h, flops_fwd=fl, xla_s=t, torch_s=t_torch))
            shape = f"{conv['grid']}², {conv['c_in']}→{conv['c_out']}, {conv['size']}×{conv['size']}"
            table.append([str(h), conv["name"], ", ".join(conv["nets"]), shape, f"{step_fl / 1e9:.2f}",
                          f"{t['fwd'] * 1e3:.1f}", f"{t['dx'] * 1e3:.1f}", f"{t['dw'] * 1e3:.1f}",
                          f"{step_xla * 1e3:.1f}", f"{step_fl / step_xla / 1e9:.0f}",
                          f"{t_torch * 1e3:.1f}", f"{step_fl / t_torch / 1e9:.0f}", f"{step_xla / t_torch:.2f}"])
            print(table[-1], flush=True)
        data.setdefault("totals", {})[str(h)] = total
        table.append([str(h), "**the step's convolutions**", "", "", f"{total['flops'] / 1e9:.2f}", "", "", "",
                      f"{total['xla'] * 1e3:.1f}", f"{total['flops'] / total['xla'] / 1e9:.0f}",
                      f"{total['torch'] * 1e3:.1f}", f"{total['flops'] / total['torch'] / 1e9:.0f}",
                      f"{total['xla'] / total['torch']:.2f}"])
    end = matmul_peaks(args.repeats)
    data["matmul_flops_per_s_at_end"] = end
    notes = (f"`python benchmarks/conv_kernels.py --hidden {' '.join(map(str, args.hidden))} --repeats {args.repeats}`: "
             f"median of {args.repeats} calls, batch {BATCH}, float32. XLA columns: forward, input gradient (dx), "
             "kernel gradient (dw) of the bare convolution (3×3, or the 2×2 phase form), each jitted alone; "
             "'XLA step' = the fast network's function for the layer (conv3x3 / upsampled_conv with their "
             "hand-written gradients), forward and the gradients the step needs (the encoder's first layer: no "
             f"input gradient), one jitted vjp; oneDNN = PyTorch {torch.__version__} conv2d, the same forward "
             f"and gradients, channels-last, {torch.get_num_threads()} threads. "
             f"2048² matmul at the start / end of the run: XLA {peaks['xla'] / 1e9:.0f} / {end['xla'] / 1e9:.0f}, "
             f"PyTorch {peaks['torch'] / 1e9:.0f} / {end['torch'] / 1e9:.0f} GFLOP/s. GFLOP counts the forward and the gradients computed (3 or 2 × forward). The sum rows "
             "count the shapes both networks use twice.")
    md = write_results("conv_kernels", data, table,
                       ["h", "convolution", "networks", "grid, channels, kernel", "GFLOP (step)", "XLA fwd ms",
                        "XLA dx ms", "XLA dw ms", "XLA step ms", "XLA step GFLOP/s", "oneDNN ms",
                        "oneDNN GFLOP/s", "XLA step / oneDNN"], notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
