"""Does an XLA optimization barrier around the fast GroupNorm + ReLU change the training step time?

    python benchmarks/gn_barrier.py HIDDEN VARIANTS [ENVIRONMENT] [REPEATS]
    python benchmarks/gn_barrier.py 16 base,fwd,bwd,both pendulum 7

Variants (each compiled in this process, then timed round-robin; median seconds per step of the
full KeyCLD loss, batch 1 × 50 frames): base = keycld's networks as they are; fwd = the
GroupNorm + ReLU output is an optimization barrier (XLA cannot fuse it into the next
convolution's input copies); bwd = its input gradient is one; both = both, and the incoming
gradient too. Results: benchmarks/results/history/README.md.
"""
import functools
import sys
import time

import keycld  # noqa: F401  (sets the XLA flag before jax starts)
import jax
import numpy as np
import keycld.model.networks as N
from keycld.config import TrainConfig
from keycld.model.keycld import KeyCLD
import keycld.train as T

MODE = {"v": "base"}
_FWD, _BWD = N._gn_relu_fwd, N._gn_relu_bwd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm_relu(x, scale, bias, groups, eps):
    return _fwd(x, scale, bias, groups, eps)[0]


def _fwd(x, scale, bias, groups, eps):
    out, res = _FWD(x, scale, bias, groups, eps)
    if MODE["v"] in ("fwd", "both"):
        out = jax.lax.optimization_barrier(out)
    return out, res


def _bwd(groups, eps, res, g):
    if MODE["v"] == "both":
        g = jax.lax.optimization_barrier(g)
    dx, dscale, dbias = _BWD(groups, eps, res, g)
    if MODE["v"] in ("bwd", "both"):
        dx = jax.lax.optimization_barrier(dx)
    return dx, dscale, dbias


group_norm_relu.defvjp(_fwd, _bwd)


def main() -> None:
    hidden, variants = int(sys.argv[1]), sys.argv[2].split(",")
    environment = sys.argv[3] if len(sys.argv) > 3 else "pendulum"
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 7
    unknown = set(variants) - {"base", "fwd", "bwd", "both"}
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; allowed: base, fwd, bwd, both")
    N.group_norm_relu = group_norm_relu  # GroupNorm looks it up at trace time
    cfg = TrainConfig(environment=environment, num_hidden_dim=hidden)
    model = KeyCLD.from_config(cfg)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (1, 50, 64, 64, 3), dtype=np.uint8)
    actions = rng.uniform(-2, 2, (1, model.num_actions)).astype(np.float32)
    steps, states = {}, {}
    for v in variants:
        MODE["v"] = v  # read while the first call traces
        state, step = T.init_state(cfg, model), T.make_train_step(cfg, model)
        t = time.perf_counter()
        state, m = step(state, frames, actions)
        jax.block_until_ready(m)
        print(f"{v}: compile {time.perf_counter() - t:.1f} s", flush=True)
        steps[v], states[v] = step, state
    times = {v: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            t = time.perf_counter()
            states[v], m = steps[v](states[v], frames, actions)
            jax.block_until_ready(m)
            times[v].append(time.perf_counter() - t)
    for v in variants:
        print(f"{v}: median {np.median(times[v]):.3f} s  (" + " ".join(f"{x:.3f}" for x in times[v]) + ")")


if __name__ == "__main__":
    main()
