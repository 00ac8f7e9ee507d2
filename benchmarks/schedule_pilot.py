"""Early-training pilot: how fast the encoder localises its keypoints under schedule variants.

Trains the cpu preset's network (h = 16) for ``--steps`` steps of one sequence, switching from a
variant's warm-up settings to the preset's main-stage loss after the warm-up steps, and every
``--every`` steps auto-encodes 10 validation sequences: ``val_recon`` (summed squared pixel
error per frame, rendered with the main stage's Gaussian width) and ``val_phi`` (mean |Φ| of
the encoded keypoints, image units). Ends with the validation VPT. Writes one JSON per run.

    python benchmarks/schedule_pilot.py --variant wideae --seed 0 --out wideae-s0.json
"""
from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import keycld
from keycld.cliutil import StrictParser, positive_int
from keycld.config import TrainConfig, preset_fields
from keycld.data import background_image
from keycld.evaluate import evaluate_vpt
from keycld.model.keycld import KeyCLD
from keycld.tasks import ENVIRONMENTS
from keycld.train import _epoch_order, init_state, load_training_data, make_train_step

_AE = dict(dynamics_weight=0.0, bce_weight=0.0)
# name: (warm-up steps, loss changes in the warm-up, Gaussian width in the warm-up,
#        loss changes in the main stage)
VARIANTS = {
    "base": (0, {}, None, {}),
    "wide": (450, {}, 0.2, {}),
    "ae": (450, _AE, None, {}),
    "wideae": (450, _AE, 0.2, {}),
    "widebce": (450, dict(dynamics_weight=0.0), 0.2, {}),
    "wideaecon": (450, _AE, 0.2, dict(constraint_weight=10.0)),
    "widebcefg": (450, dict(dynamics_weight=0.0, warmup_epochs=1, warmup_foreground_weight=1.0), 0.2, {}),
}


def main() -> None:
    p = StrictParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=tuple(VARIANTS), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=positive_int, default=900)
    p.add_argument("--every", type=positive_int, default=75)
    p.add_argument("--env", choices=ENVIRONMENTS, default="pendulum")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    # the main stage of the cpu preset: the variants differ only in their warm-up steps
    base = TrainConfig(environment=a.env, control="yes", seed=a.seed, num_hidden_dim=16,
                       num_predicted_steps=preset_fields("cpu", a.env)["num_predicted_steps"])
    W, warm_changes, warm_sigma, main_changes = VARIANTS[a.variant]
    data = load_training_data(base, keycld.systems.get(a.env), progress=False)
    tr, va = data.split("train"), data.split("val")
    model = KeyCLD.from_config(base)
    warm_cfg = dataclasses.replace(base, **warm_changes)
    base = dataclasses.replace(base, **main_changes)
    warm_model = dataclasses.replace(model, sigma=warm_sigma) if warm_sigma else model
    step_main = make_train_step(base, model)
    background = background_image(tr.frames) if warm_cfg.warmup_foreground_weight else None
    step_warm = make_train_step(warm_cfg, warm_model, background) if W else None
    state = init_state(base, model)
    sub = va.frames[:10].astype(np.float32) / 255.0

    @jax.jit
    def probe(params, imgs):
        kp, _ = jax.vmap(lambda x: model.encode(params, x))(imgs)
        rec = jax.vmap(lambda k: model.render(params, k))(kp)
        err = jnp.sum((rec - imgs) ** 2, axis=(2, 3, 4)).mean()
        phi = jnp.abs(jax.vmap(jax.vmap(model.dynamics.constraint_residual))(kp)).mean()
        return err, phi

    log = []
    t0 = time.perf_counter(); s = 0; ep = 0; train_t = 0.0
    while s < a.steps:
        for idx in _epoch_order(base, ep, len(tr)):
            if s >= a.steps: break
            f = step_warm if s < W else step_main
            t1 = time.perf_counter()
            state, terms = f(state, tr.frames[idx], tr.action[idx].astype(np.float32))
            jax.block_until_ready(state.step); train_t += time.perf_counter() - t1
            s += 1
            if s % a.every == 0:
                err, phi = probe(state.params, jnp.asarray(sub))
                rec = {"step": s, "train_s": round(train_t, 1), "val_recon": float(err), "val_phi": float(phi),
                       **{k: float(v) for k, v in terms.items()}}
                log.append(rec); print(json.dumps(rec), flush=True)
        ep += 1
    vpt = evaluate_vpt(model, state.params, va)
    out = {"variant": a.variant, "seed": a.seed, "steps": a.steps, "log": log,
           "vpt_mean": vpt["mean"], "phi_pred": vpt.get("constraint_residual", {}).get("mean"), "wall": time.perf_counter() - t0}
    print("FINAL", a.variant, a.seed, vpt["mean"], out["phi_pred"], flush=True)
    json.dump(out, open(a.out, "w"))

if __name__ == "__main__":
    main()
