"""The original KeyCLD code's training step, timed on this machine: train_step.py's baseline.

    python benchmarks/original_step.py --src DIR [--cases JSON] [--repeats 5]

``DIR`` is a checkout of the paper's code (https://github.com/rdaems/keycld; commit 426c99a was
measured). It is not part of this package and nothing of it is copied here: this script imports
its ``keycld.models``, ``keycld.losses``, ``keycld.util`` and ``keycld.constraints`` from
``DIR`` and builds the step exactly as its ``ExperimentBase.train`` does: ``jax.jit`` of
``jax.value_and_grad`` of the batch mean of the vmapped ``loss_fn_step`` with the README's
settings (batch 1 sequence of 50 frames, Euler, 4 predicted steps, dynamics and BCE weights 1),
called on one random batch with a random dihedral augmentation per frame. ``step_s`` is the
median of that jitted call; the original loop then applies its optax update eagerly, outside the
jit, which ``update_s`` times separately (ours is inside our jitted step, so comparing our step
with ``step_s`` alone favours the original).

Two shims let the code import under the jax this package pins; neither touches the timed
computation: ``jax.experimental.ode`` (removed from jax; only its ``dopri`` solver uses
``odeint``, which the benchmark does not) and ``jax.tree_map`` (removed; an alias of
``jax.tree.map``, used by ``reduce_mean``).

The process imports our ``keycld`` first, so that the XLA flag is set exactly as for our steps
(``KEYCLD_NO_XLA_FLAGS`` opts out), then forgets it: both packages are named ``keycld``. The
allocator is whatever the environment preloads. Prints one line,
``RESULT [ {environment, hidden, step_s, update_s, compile_s, times_s, tcmalloc, xla_flags}, ... ]``.
"""
from __future__ import annotations

import json
import os
import sys
import time
import types
from pathlib import Path

import keycld  # noqa: F401  (sets the XLA flag before jax starts; forgotten before the original is imported)
from keycld._allocator import tcmalloc_loaded
from keycld.cliutil import StrictParser, positive_int
from keycld.systems import BUILTIN

DEFAULT_CASES = [["pendulum", 32], ["cartpole", 32], ["pendulum", 16], ["cartpole", 16]]


def _shim_jax(jax) -> None:
    try:
        import jax.experimental.ode  # noqa: F401
    except ImportError:
        ode = types.ModuleType("jax.experimental.ode")

        def odeint(*args, **kwargs):
            raise NotImplementedError("the benchmark times the Euler solver only")

        ode.odeint = odeint
        sys.modules["jax.experimental.ode"] = ode
    if not hasattr(jax, "tree_map"):
        jax.tree_map = jax.tree.map


def src_error(src: Path) -> str | None:
    """Why ``src`` is not a checkout of the paper's code, or None when it looks like one."""
    if (src / "keycld" / "losses.py").is_file():
        return None
    return f"{src}: no keycld/losses.py there; pass a checkout of github.com/rdaems/keycld"


def _forget_our_package() -> None:
    """Drop our ``keycld`` from ``sys.modules`` so that ``import keycld`` finds the original's."""
    for name in [m for m in sys.modules if m == "keycld" or m.startswith("keycld.")]:
        del sys.modules[name]


def import_original(src: Path) -> types.SimpleNamespace:
    """The paper code's ``constraints`` module, ``loss_fn_step``, ``KeyCLD`` and ``reduce_mean``,
    imported from ``src`` (our ``keycld`` is forgotten first; RuntimeError if they came from
    elsewhere)."""
    import jax

    _shim_jax(jax)
    _forget_our_package()
    sys.path.insert(0, str(src))
    from keycld import constraints
    from keycld.losses import loss_fn_step
    from keycld.models import KeyCLD
    from keycld.util import reduce_mean

    if not Path(constraints.__file__).resolve().is_relative_to(src.resolve()):
        raise RuntimeError(f"imported keycld from {constraints.__file__}, not from --src {src}")
    return types.SimpleNamespace(constraints=constraints, loss_fn_step=loss_fn_step, KeyCLD=KeyCLD,
                                 reduce_mean=reduce_mean)


def measure(original: types.SimpleNamespace, environment: str, hidden: int, repeats: int) -> dict:
    """Median seconds of the original jitted loss + gradient (one 50-frame sequence) and of its
    eager optax update, for ``environment`` at width ``hidden``; ``original`` from ``import_original``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    system = BUILTIN[environment]
    k = system.num_keypoints
    model = original.KeyCLD(k, k, hidden, True, getattr(original.constraints, f"{environment}_constraint_fn"))
    params = model.init(jax.random.PRNGKey(0))
    loss = jax.vmap(lambda p, item, perm: original.loss_fn_step(1.0, 1.0, 4, "euler", model, p, item, perm),
                    in_axes=(None, 0, 0))
    loss_grad = jax.jit(jax.value_and_grad(original.reduce_mean(loss), has_aux=True))
    rng = np.random.default_rng(0)
    batch = {"t": jnp.asarray(np.arange(50, dtype=np.float32)[None] * system.dt),
             "x": jnp.asarray(rng.integers(0, 255, (1, 50, 64, 64, 3)).astype(np.float32) / 255),
             "action": jnp.asarray(rng.uniform(-1, 1, (1, k)).astype(np.float32))}
    perm = rng.integers(0, 8, (1, 50))
    labels = {name: ("d" if name in ("mass_matrix", "potential_energy", "input_matrix") else "v") for name in params}
    tx = optax.chain(optax.clip(5.0), optax.multi_transform({"v": optax.adam(3e-4), "d": optax.adam(6e-5)}, labels))
    opt_state = tx.init(params)

    t = time.perf_counter()
    (_, _), grads = loss_grad(params, batch, perm)
    jax.block_until_ready(grads)
    compile_s = time.perf_counter() - t
    updates, opt_state = tx.update(grads, opt_state)  # the eager update's first call compiles its ops
    jax.block_until_ready(optax.apply_updates(params, updates))
    times, update_times = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        (_, _), grads = loss_grad(params, batch, perm)
        jax.block_until_ready(grads)
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        updates, opt_state = tx.update(grads, opt_state)
        jax.block_until_ready(optax.apply_updates(params, updates))
        update_times.append(time.perf_counter() - t)
    return dict(environment=environment, hidden=hidden, step_s=float(np.median(times)), times_s=times,
                update_s=float(np.median(update_times)), compile_s=compile_s, tcmalloc=tcmalloc_loaded(),
                xla_flags=os.environ.get("XLA_FLAGS", ""))


def main() -> None:
    ap = StrictParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="a checkout of github.com/rdaems/keycld")
    ap.add_argument("--cases", default=json.dumps(DEFAULT_CASES),
                    help="JSON list of [environment, hidden] pairs (default: %(default)s)")
    ap.add_argument("--repeats", type=positive_int, default=5)
    args = ap.parse_args()
    if (error := src_error(args.src)) is not None:
        ap.error(f"--src {error}")
    try:
        cases = json.loads(args.cases)
    except json.JSONDecodeError as e:
        ap.error(f"--cases {args.cases!r}: not JSON ({e})")
    if not isinstance(cases, list) or not cases:
        ap.error(f"--cases {args.cases!r}: must be a non-empty JSON list of [environment, hidden] pairs")
    for case in cases:
        if (not isinstance(case, list) or len(case) != 2 or case[0] not in BUILTIN
                or not isinstance(case[1], int) or case[1] < 8 or case[1] % 8):
            ap.error(f"--cases: bad case {case!r}; allowed: [environment, hidden] with environment one of "
                     f"{sorted(BUILTIN)} and hidden a positive multiple of 8")
    original = import_original(args.src)
    print("RESULT " + json.dumps([measure(original, env, h, args.repeats) for env, h in cases]))


if __name__ == "__main__":
    main()
