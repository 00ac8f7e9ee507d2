"""Training: optimiser, pure jitted train step, and the loop (I/O, logging, checkpoints).

The run directory's files are described in :mod:`keycld.rundir`. Killing training loses at
most the current epoch; ``resume`` continues from the last complete checkpoint and gives the
same result as an uninterrupted run (data order and augmentation keys are functions of (seed,
epoch, step) only).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from keycld import checkpoint, fileio, rundir
from keycld.config import TrainConfig
from keycld.losses import sequence_loss
from keycld.model import onednn
from keycld.model.keycld import KeyCLD
from keycld.system import System


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the message names the step and the loss terms."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    params: Any
    opt_state: Any
    step: jnp.ndarray


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Clip the global gradient norm, then Adam; the dynamics networks get a smaller rate."""
    def labels(params):
        return {k: jax.tree_util.tree_map(lambda _: "dynamics" if k == "dynamics" else "nets", v)
                for k, v in params.items()}
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.multi_transform({"nets": optax.adam(cfg.learning_rate),
                               "dynamics": optax.adam(cfg.learning_rate * cfg.dynamics_lr_factor)}, labels))


def init_state(cfg: TrainConfig, model: KeyCLD) -> TrainState:
    params = model.init(jax.random.PRNGKey(cfg.seed))
    return TrainState(params, make_optimizer(cfg).init(params), jnp.zeros((), jnp.int32))


def source_params(cfg: TrainConfig):
    """The weights of ``cfg.init_from`` (None when unset); ValueError when that directory is no
    usable run or holds another model (kind, num_hidden_dim, environment) than ``cfg`` needs."""
    if cfg.init_from is None:
        return None
    source = Path(cfg.init_from)
    try:
        _, params, source_cfg = rundir.load_model(source)
    except FileNotFoundError as err:
        raise ValueError(f"init_from {source}: {err}") from None
    if (source_cfg.model, source_cfg.num_hidden_dim, source_cfg.environment) != (cfg.model, cfg.num_hidden_dim,
                                                                                cfg.environment):
        raise ValueError(
            f"init_from {source}: a {source_cfg.model} {source_cfg.environment} model with "
            f"num_hidden_dim {source_cfg.num_hidden_dim}; this run needs {cfg.model} {cfg.environment} "
            f"with num_hidden_dim {cfg.num_hidden_dim}")
    return params


def initial_state(cfg: TrainConfig, model: KeyCLD) -> TrainState:
    """``init_state``, with the weights of ``cfg.init_from`` when it is set (fresh optimiser)."""
    state = init_state(cfg, model)
    params = source_params(cfg)
    if params is None:
        return state
    return TrainState(params, make_optimizer(cfg).init(params), state.step)


def make_train_step(cfg: TrainConfig, model: KeyCLD, background: np.ndarray | None = None):
    """Return ``train_step(state, frames (B,T,64,64,3) uint8, actions (B,A)) -> (state, metrics)``.

    ``background``: (64, 64, 3) in [0, 1] (``keycld.data.background_image`` of the training
    frames), needed when ``cfg.warmup_foreground_weight`` > 0 for a heatmap model."""
    if cfg.warmup_foreground_weight > 0 and model.heatmaps and background is None:
        raise ValueError(f"warmup_foreground_weight = {cfg.warmup_foreground_weight} needs the training data's "
                         "background image (keycld.data.background_image)")
    if background is not None:
        background = np.asarray(background)
        if background.shape != (64, 64, 3) or background.dtype != np.float32 \
                or not (0.0 <= background.min() and background.max() <= 1.0):
            raise ValueError(f"background must be a float32 (64, 64, 3) image in [0, 1], got {background.dtype} "
                             f"{background.shape}")
    bg = None if background is None else jnp.asarray(background)
    tx = make_optimizer(cfg)
    base_key = jax.random.PRNGKey(cfg.seed + 1)

    def batch_loss(params, frames, actions, key):
        keys = jax.random.split(key, frames.shape[0])
        loss_fn = partial(sequence_loss, model, params, num_predicted_steps=cfg.num_predicted_steps,
                          dynamics_weight=cfg.dynamics_weight, bce_weight=cfg.bce_weight, augment=cfg.augment,
                          constraint_weight=cfg.constraint_weight,
                          foreground_weight=cfg.warmup_foreground_weight, background=bg)
        totals, terms = jax.vmap(loss_fn)(frames, actions, keys)
        return jnp.mean(totals), jax.tree_util.tree_map(jnp.mean, terms)

    @partial(jax.jit, donate_argnums=0)
    def train_step(state: TrainState, frames, actions):
        key = jax.random.fold_in(base_key, state.step)
        (_, terms), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params, frames, actions, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        terms["grad_norm"] = optax.tree.norm(grads)
        finite = jnp.isfinite(terms["loss"]) & jnp.isfinite(terms["grad_norm"])
        # never step into NaN: keep the old state when the loss is not finite
        new = TrainState(params, opt_state, state.step + 1)
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, state)
        return new, terms

    return train_step


# ---------------------------------------------------------------------------------------------
def _epoch_order(cfg: TrainConfig, epoch: int, n_train: int) -> np.ndarray:
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
    steps = n_train // cfg.batch_size
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    return order[: steps * cfg.batch_size].reshape(steps, cfg.batch_size)


NOT_YET = -1  # ``refine_from`` in a checkpoint: the refine stage has not started


def _checkpoint_tree(state: TrainState, epoch: int, wall: float, refine_from: int | None = None) -> dict:
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
            "epoch": np.int32(epoch), "wall_time": np.float64(wall),
            "refine_from": np.int32(NOT_YET if refine_from is None else refine_from)}


def load_checkpoint(run_dir: Path, cfg: TrainConfig, model: KeyCLD) -> tuple[TrainState, int, float, int | None]:
    """(state, completed epochs, training wall time so far, first refine epoch or None) from
    ``run_dir``."""
    # structure only (eval_shape): initialising the networks eagerly costs seconds to minutes
    target = _checkpoint_tree(jax.eval_shape(lambda: init_state(cfg, model)), 0, 0.0)
    raw = rundir.read_weights(run_dir, cfg, "last")
    raw.pop("model", None)  # the model kind, checked by read_weights
    raw.setdefault("refine_from", np.int32(NOT_YET))  # checkpoints written before staged schedules
    tree = rundir.restore_params(run_dir, raw, target, cfg, "last")
    state = TrainState(tree["params"], tree["opt_state"], jnp.asarray(tree["step"], jnp.int32))
    refine_from = int(tree["refine_from"])
    return state, int(tree["epoch"]), float(tree["wall_time"]), (None if refine_from == NOT_YET else refine_from)


def load_training_data(cfg: TrainConfig, system: System, cache_dir=None, progress: bool = True,
                       workers: int | None = None):
    """The Dataset a run trains on: a paper dataset (generated and cached if needed) or, for
    your own system, the npz ``cfg.data`` (checked against ``cfg.data_sha256``)."""
    from keycld.data import load_dataset, load_runs

    if cfg.user_data:
        data = load_runs(cfg.data, system, cfg.data_sha256)
        if data.frames.shape[:2] != (cfg.num_runs, cfg.num_frames):
            raise ValueError(f"{cfg.data} holds {data.frames.shape[0]} runs × {data.frames.shape[1]} frames; "
                             f"the run was configured for {cfg.num_runs} × {cfg.num_frames}")
        return data
    return load_dataset(cfg.dataset_config(), cache_dir=cache_dir, progress=progress, workers=workers)


def train(cfg: TrainConfig, run_dir: str | os.PathLike, resume: bool = False, cache_dir=None,
          progress: bool = True, validate: bool = True, gif: bool = True, logger=None,
          workers: int | None = None, system_file: str | os.PathLike | None = None,
          conv_backend: str = "auto") -> dict:
    """Train (or resume) a run; return the last epoch's metrics.

    A new run needs ``run_dir`` absent, empty, or an unstarted run of ``cfg``
    (``rundir.check_new_run``); ``resume`` continues the checkpoint there with its saved config,
    of which ``cfg`` may change only ``num_epochs`` (upwards). Nothing is written before these
    checks, the data and the initial weights are ready. The run directory is locked
    (``rundir.LOCK``) while training: a second process gets ``fileio.LockedError``.

    A run on your own system (``cfg.data`` set) starts from ``system_file``, the spec file
    defining ``cfg.system_attr``; it is copied into the run directory, which every later
    resume, evaluation and export reads instead.

    ``conv_backend`` runs the networks' convolutions on "xla" or "onednn"
    (``keycld.model.onednn``; "auto": oneDNN on a CPU with PyTorch installed). It changes the
    speed, not the function (up to float summation order), and is recorded in each epoch's
    metrics; a resumed run may use another.

    Raises TrainingDiverged on a non-finite loss; the last checkpoint stays as it was.
    """
    conv_backend = onednn.resolve(conv_backend)
    run_dir = Path(run_dir)
    _check_run_dir(cfg, run_dir, resume, system_file)
    run_dir.mkdir(parents=True, exist_ok=True)
    with fileio.locked(run_dir / rundir.LOCK, wait=False, what=f"run directory {run_dir}"):
        continuing = _check_run_dir(cfg, run_dir, resume, system_file)  # again, now that no one else writes
        fileio.remove_stale_temporaries(run_dir)
        return _train_locked(cfg, run_dir, continuing, cache_dir, progress, validate, gif, logger, workers,
                             system_file, conv_backend)


def _check_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool, system_file) -> bool:
    """True when training continues the checkpoint in ``run_dir``, False when it starts anew
    there; raises when neither is allowed (see ``train``)."""
    if resume and (run_dir / rundir.CHECKPOINT).is_file():
        saved = rundir.check_resumable(run_dir)
        diff = [d for d in rundir.config_differences(saved, cfg) if not d.startswith("num_epochs:")]
        if diff or cfg.num_epochs < saved.num_epochs:
            raise ValueError(f"config of {run_dir} differs from the requested one ({'; '.join(diff) or 'num_epochs'}); "
                             "resume with the saved config (num_epochs may grow)")
        return True
    if resume and rundir.is_export(run_dir):
        rundir.check_resumable(run_dir)  # raises: an export has no optimiser state
    rundir.check_new_run(run_dir, cfg)
    if cfg.user_data and system_file is None:
        raise ValueError("a run on your own data needs system_file, the spec file defining its System")
    return False


def _train_locked(cfg: TrainConfig, run_dir: Path, continuing: bool, cache_dir, progress: bool, validate: bool,
                  gif: bool, logger, workers, system_file, conv_backend: str) -> dict:
    from tqdm.auto import tqdm

    from keycld.data import background_image
    from keycld.evaluate import evaluate_vpt

    if continuing:
        model = KeyCLD.from_config(cfg, rundir.load_system(run_dir, cfg))
        state, start_epoch, wall, refine_from = load_checkpoint(run_dir, cfg, model)
    else:
        system = (rundir.load_system_spec(system_file, cfg) if cfg.user_data
                  else rundir.load_system(run_dir, cfg))
        model = KeyCLD.from_config(cfg, system)
        state, start_epoch, wall, refine_from = initial_state(cfg, model), 0, 0.0, None
    model = dataclasses.replace(model, conv_backend=conv_backend)
    data = load_training_data(cfg, model.system, cache_dir, progress, workers)
    # everything is checked and loaded: from here on the run directory is written
    if continuing:
        if rundir.load_config(run_dir) != cfg:  # a longer schedule
            cfg.save(run_dir / rundir.CONFIG)
        rundir.truncate_metrics(run_dir, start_epoch)
        _sync_best(run_dir, cfg, state, start_epoch)
    else:
        if cfg.user_data:
            rundir.copy_system_spec(system_file, run_dir)
        cfg.save(run_dir / rundir.CONFIG)
        if cfg.init_from is not None:  # the source's budget, kept with the run (rundir.run_budget)
            fileio.write_json(run_dir / rundir.INIT_FROM, rundir.run_budget(cfg.init_from))
        for name in (rundir.METRICS, rundir.BEST):
            if (run_dir / name).exists():
                (run_dir / name).unlink()

    train_set, val_set = data.split("train"), data.split("val")
    validating = validate and len(val_set) > 0
    steps_by_stage: dict = {}  # one jitted step per stage config; the optimiser state layout is shared
    device = jax.devices()[0].device_kind  # hardware of each epoch, for the model card
    best = rundir.read_best(run_dir)
    background = (background_image(train_set.frames)
                  if cfg.warmup_foreground_weight > 0 and start_epoch < cfg.warmup_epochs else None)
    last: dict = {}
    for epoch in range(start_epoch, cfg.num_epochs):
        t0 = time.perf_counter()
        order = _epoch_order(cfg, epoch, len(train_set))
        stage_name, stage = cfg.stage_name(epoch, refine_from), cfg.stage(epoch, refine_from)
        stage_model = dataclasses.replace(model, sigma=stage.sigma)
        if stage not in steps_by_stage:
            steps_by_stage[stage] = make_train_step(stage, stage_model, background)
        train_step = steps_by_stage[stage]
        sums: dict[str, float] = {}
        bar = tqdm(order, desc=f"epoch {epoch + 1}/{cfg.num_epochs} ({stage_name})", disable=not progress,
                   leave=False)
        for idx in bar:
            step = int(state.step)
            state, terms = train_step(state, train_set.frames[idx], train_set.action[idx].astype(np.float32))
            terms = {k: float(v) for k, v in terms.items()}
            if not all(math.isfinite(v) for v in terms.values()):
                raise TrainingDiverged(
                    f"non-finite loss at step {step} (epoch {epoch + 1}): "
                    + ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
                    + f"; the last good checkpoint ({run_dir / rundir.CHECKPOINT}) is kept")
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{terms[k]:.4g}" for k in ("loss", "reconstruction", "dynamics", "bce", "foreground",
                                                             "constraint")
                             if k in terms})
        train_time = time.perf_counter() - t0
        wall += train_time
        record = {"epoch": epoch + 1, "step": int(state.step), "stage": stage_name, "train_time_s": train_time,
                  "wall_time_s": wall, "device": device,
                  "conv_backend": conv_backend, **{f"train/{k}": v / len(order) for k, v in sums.items()}}
        if validating:
            t1 = time.perf_counter()
            record.update(_validation_record(stage_model, state.params, val_set))
            if gif:
                from keycld.visualize import validation_gif
                validation_gif(stage_model, state.params, val_set, run_dir / rundir.gif_file(epoch + 1))
            record["val_time_s"] = time.perf_counter() - t1  # outside train_time_s / wall_time_s
            if (cfg.refine_when == "localised" and refine_from is None and stage_name == "main"
                    and record["val/reconstruction_ratio"] < cfg.localised_ratio):
                refine_from = epoch + 1
                record["refine_from"] = refine_from + 1  # 1-based, as "epoch"
        rundir.append_metrics(run_dir, record)
        checkpoint.save(run_dir / rundir.CHECKPOINT,
                        {**_checkpoint_tree(state, epoch + 1, wall, refine_from), "model": cfg.model})
        # the warm-up renders other Gaussian maps than the model it trains for: never the best
        if validating and stage_name != "warmup" and (best is None or record["val/vpt_mean"] > best["val_vpt_mean"]):
            rundir.save_best(run_dir, state.params, epoch + 1, record["val/vpt_mean"], cfg.model)
            best = {"epoch": epoch + 1, "val_vpt_mean": record["val/vpt_mean"]}
        if logger is not None:
            logger(record)
        if progress:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        last = record
    if validating:
        weights = "best" if best is not None else "last"
        _, params, _ = rundir.load_model(run_dir, weights)
        vpt = evaluate_vpt(model, params, val_set)
        vpt.update(split="val", epochs=cfg.num_epochs, steps=int(state.step), train_wall_time_s=wall,
                   **rundir.weights_record(rundir.weights_origin(run_dir, weights)))
        fileio.write_json(run_dir / rundir.VPT, vpt)
        last["vpt"] = vpt
    return last


def _validation_record(model: KeyCLD, params, val_set) -> dict:
    """The validation entries of an epoch's metrics record: VPT statistics, |Φ| of the predicted
    keypoints, and how well the keypoints auto-encode (``keycld.evaluate.autoencoding``)."""
    from keycld.evaluate import autoencoding, evaluate_vpt

    vpt = evaluate_vpt(model, params, val_set)
    record = {f"val/vpt_{k}": vpt[k] for k in ("mean", "std", "median")}
    if "constraint_residual" in vpt:
        record["val/constraint_residual_mean"] = vpt["constraint_residual"]["mean"]
    record.update({f"val/{k}": v for k, v in autoencoding(model, params, val_set).items()})
    return record


def _sync_best(run_dir: Path, cfg: TrainConfig, state: TrainState, epochs_done: int) -> None:
    """On resume: make ``best.msgpack`` the best validated epoch of ``metrics.jsonl`` when that is
    the checkpoint's own epoch (a kill between writing the checkpoint and the best weights)."""
    best = rundir.best_epoch([r for r in rundir.read_metrics(run_dir) if r.get("stage") != "warmup"])
    saved = rundir.read_best(run_dir)
    # (a saved best of the checkpoint's own epoch has the same VPT, so it is never replaced)
    if best is not None and best["epoch"] == epochs_done \
            and (saved is None or best["val/vpt_mean"] > saved["val_vpt_mean"]):
        rundir.save_best(run_dir, state.params, epochs_done, best["val/vpt_mean"], cfg.model)
