"""Does an XLA optimization barrier around the fast GroupNorm + ReLU change the training step time?

    python benchmarks/gn_barrier.py [--hidden 16] [--variants base,fwd,bwd,both] [--environment pendulum] [--repeats 7]

Variants (each compiled in this process, then timed round-robin; median seconds per step of the
full KeyCLD loss on ``train_step.step_inputs``' batch): base = keycld's networks as they are;
fwd = the GroupNorm + ReLU output is an optimization barrier (XLA cannot fuse it into the next
convolution's input copies); bwd = its input gradient is one; both = both, and the incoming
gradient too. Prints the medians; results: benchmarks/results/history/README.md.
"""
from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ("base", "fwd", "bwd", "both")


def barrier_group_norm_relu(variant: str):
    """``keycld.model.networks.group_norm_relu`` with the barriers of ``variant`` (one of VARIANTS)."""
    import jax

    import keycld.model.networks as N

    if variant == "base":
        return N.group_norm_relu

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
    def group_norm_relu(x, scale, bias, groups, eps):
        return fwd(x, scale, bias, groups, eps)[0]

    def fwd(x, scale, bias, groups, eps):
        out, res = N._gn_relu_fwd(x, scale, bias, groups, eps)
        return (jax.lax.optimization_barrier(out) if variant in ("fwd", "both") else out), res

    def bwd(groups, eps, res, g):
        if variant == "both":
            g = jax.lax.optimization_barrier(g)
        dx, dscale, dbias = N._gn_relu_bwd(groups, eps, res, g)
        return (jax.lax.optimization_barrier(dx) if variant in ("bwd", "both") else dx), dscale, dbias

    group_norm_relu.defvjp(fwd, bwd)
    return group_norm_relu


def variants_arg(text: str) -> list[str]:
    import argparse

    names = text.split(",")
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variants {unknown}; allowed: {', '.join(VARIANTS)}")
    return names


def main() -> None:
    from keycld.cliutil import StrictParser, positive_int

    ap = StrictParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=positive_int, default=16)
    ap.add_argument("--variants", type=variants_arg, default=list(VARIANTS))
    ap.add_argument("--environment", default="pendulum")
    ap.add_argument("--repeats", type=positive_int, default=7)
    args = ap.parse_args()
    import keycld  # noqa: F401  (applies the XLA flag before jax starts)
    import jax
    import numpy as np

    import keycld.model.networks as N
    import keycld.train as T
    from keycld.config import TrainConfig
    from keycld.model.keycld import KeyCLD
    from train_step import step_inputs

    cfg = TrainConfig(environment=args.environment, num_hidden_dim=args.hidden)
    model = KeyCLD.from_config(cfg)
    frames, actions = step_inputs(model.num_actions)
    steps, states = {}, {}
    for v in args.variants:
        N.group_norm_relu = barrier_group_norm_relu(v)  # GroupNorm looks it up while the first call traces
        state, step = T.init_state(cfg, model), T.make_train_step(cfg, model)
        t = time.perf_counter()
        state, m = step(state, frames, actions)
        jax.block_until_ready(m)
        print(f"{v}: compile {time.perf_counter() - t:.1f} s", flush=True)
        steps[v], states[v] = step, state
    times = {v: [] for v in args.variants}
    for _ in range(args.repeats):
        for v in args.variants:
            t = time.perf_counter()
            states[v], m = steps[v](states[v], frames, actions)
            jax.block_until_ready(m)
            times[v].append(time.perf_counter() - t)
    for v in args.variants:
        print(f"{v}: median {np.median(times[v]):.3f} s  (" + " ".join(f"{x:.3f}" for x in times[v]) + ")")


if __name__ == "__main__":
    main()
