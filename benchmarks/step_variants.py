"""Variants of the training step compiled side by side in one process and timed in turn.

    python benchmarks/step_variants.py [--hidden 16] [--environment pendulum] [--rounds 10]

This machine's speed drifts by more than 10% within minutes, so variants measured in separate
processes minutes apart cannot be told apart at that level. Here every variant of the full
training step (``TrainConfig`` defaults, the paper's loss with 4 predicted steps, at width
``--hidden``: forward + backward + Adam, one 50-frame sequence) is compiled in the same process,
and each round calls every variant once, in a shuffled order (seeded);
the table gives each variant's median step and the median over rounds of its ratio to the step
as shipped in the same round.

Variants:

* XLA compile options (``Lowered.compile(compiler_options=...)``) on top of keycld's XLA flag:
  the concurrency-optimised scheduler, 512-bit vectors, oneDNN, fast math (which changes results);
* the fast networks with one of their hand-written gradients replaced by XLA's autodiff of the
  same forward computation (``keycld.model.networks``: ``upsampled_conv``, ``add_channel_bias``,
  ``narrow_conv``, ``group_norm_relu``).

Writes results/step_variants.{json,md}.
"""
from __future__ import annotations

import contextlib
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

COMPILE_OPTIONS = {
    "XLA: concurrency-optimised scheduler": {"xla_cpu_enable_concurrency_optimized_scheduler": True},
    "XLA: 512-bit vectors": {"xla_cpu_prefer_vector_width": 512},
    "XLA: oneDNN": {"xla_cpu_use_onednn": True},
    "XLA: fast math (changes results)": {"xla_cpu_enable_fast_math": True},
}


def _autodiff(networks, name: str) -> None:
    """Replace ``networks.<name>`` (a ``jax.custom_vjp`` function) by its plain forward."""
    forward = {
        "upsampled_conv": lambda u, k: networks._upsampled_conv_fwd(u, k)[0],
        "add_channel_bias": lambda y, b: y + b,
        "narrow_conv": lambda x, k: networks._conv(x, k, "SAME"),
        "group_norm_relu": lambda x, s, b, g, e: networks._gn_relu_fwd(x, s, b, g, e)[0],
    }[name]
    setattr(networks, name, forward)


CODE_VARIANTS = [f"autodiff: {n}" for n in ("upsampled_conv", "add_channel_bias", "narrow_conv", "group_norm_relu")]


@contextlib.contextmanager
def variant_networks(variant: str):
    """Within the block, ``keycld.model.networks`` is as the variant needs it (an "autodiff: "
    variant replaces that function); afterwards every name of the module is as it was."""
    from keycld.model import networks

    saved = dict(vars(networks))
    try:
        if variant.startswith("autodiff: "):
            _autodiff(networks, variant.removeprefix("autodiff: "))
        yield networks
    finally:
        for name in set(vars(networks)) - set(saved):
            delattr(networks, name)
        for name, value in saved.items():
            setattr(networks, name, value)


def build(environment: str, hidden: int, variant: str):
    """(compiled step, host copy of the initial state, frames, actions) for one variant."""
    import jax

    from keycld.config import TrainConfig
    from keycld.model.keycld import KeyCLD
    from keycld.train import init_state, make_train_step
    from train_step import step_inputs

    with variant_networks(variant):
        cfg = TrainConfig(environment=environment, num_hidden_dim=hidden)
        model = KeyCLD.from_config(cfg)
        state = init_state(cfg, model)
        frames, actions = step_inputs(model.num_actions)
        lowered = make_train_step(cfg, model).lower(state, frames, actions)
        compiled = lowered.compile(compiler_options=COMPILE_OPTIONS[variant]) if variant in COMPILE_OPTIONS \
            else lowered.compile()
    host_state = jax.device_get(state)
    return compiled, host_state, frames, actions


def main() -> None:
    from keycld.cliutil import StrictParser, positive_int

    ap = StrictParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=positive_int, default=16)
    ap.add_argument("--environment", default="pendulum", choices=["pendulum", "cartpole", "acrobot"])
    ap.add_argument("--rounds", type=positive_int, default=10)
    args = ap.parse_args()
    if args.hidden % 8:
        ap.error(f"--hidden {args.hidden}: must be a multiple of 8 (GroupNorm's 8 groups)")
    import time

    import jax
    import numpy as np

    from _common import machine, write_results

    shipped = "as shipped"
    variants = [shipped] + list(COMPILE_OPTIONS) + CODE_VARIANTS
    built = {v: build(args.environment, args.hidden, v) for v in variants}
    losses = {}
    for v, (step, state, frames, actions) in built.items():  # the first call of each, untimed
        _, metrics = step(jax.device_put(state), frames, actions)
        losses[v] = float(metrics["loss"])
    times = {v: [] for v in variants}
    order = random.Random(0)
    for _ in range(args.rounds):
        for v in order.sample(variants, len(variants)):
            step, state, frames, actions = built[v]
            fresh = jax.block_until_ready(jax.device_put(state))  # the step donates its state
            t = time.perf_counter()
            jax.block_until_ready(step(fresh, frames, actions))
            times[v].append(time.perf_counter() - t)
    base = np.array(times[shipped])
    rows, data = [], {"machine": machine(), "environment": args.environment, "hidden": args.hidden,
                      "rounds": args.rounds, "results": []}
    for v in variants:
        t = np.array(times[v])
        ratio = float(np.median(t / base))
        data["results"].append(dict(variant=v, times_s=t.tolist(), step_s=float(np.median(t)), ratio=ratio,
                                    first_loss=losses[v]))
        rows.append([v, f"{np.median(t):.3f}", f"{ratio:.3f}", f"{np.percentile(t / base, 25):.3f}–"
                     f"{np.percentile(t / base, 75):.3f}", f"{losses[v]:.4f}"])
    notes = (f"`python benchmarks/step_variants.py --hidden {args.hidden} --environment {args.environment} "
             f"--rounds {args.rounds}`: the training step (one 50-frame sequence, forward + backward + Adam) of "
             "each variant, all compiled in one process and called once per round in a shuffled order; "
             "'ratio' = median over rounds of the variant's step over the shipped step's in the same round "
             "(below 1: faster), with its interquartile range; 'loss' = the first step's loss (same "
             "parameters and batch for every variant).")
    md = write_results("step_variants", data, rows, ["variant", "step s", "ratio to shipped", "ratio IQR", "loss"],
                       notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
