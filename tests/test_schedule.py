"""The training schedule's stages (warm-up, main, refine by epoch or by a measured criterion) and
the best-epoch weights kept next to the last checkpoint."""
import json

import jax
import numpy as np
import pytest

import keycld.evaluate as E
import keycld.train as T
from keycld import rundir
from keycld.config import TrainConfig
from conftest import kill_training_at_step

TINY = dict(environment="pendulum", control="yes", num_runs=5, num_frames=8, num_hidden_dim=8,
            num_predicted_steps=2, max_steps_per_epoch=1)
REAL_AUTOENCODING, REAL_EVALUATE_VPT = E.autoencoding, E.evaluate_vpt
LOCALISED = dict(refine_when="localised", refine_num_predicted_steps=3, refine_dynamics_lr_factor=1.0)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _stages(run_dir):
    return [r["stage"] for r in rundir.read_metrics(run_dir)]


# ---- stages as a function of the epoch ---------------------------------------------------------
def test_stage_settings():
    cfg = TrainConfig(**TINY, num_epochs=5, warmup_epochs=2, warmup_sigma=0.25, **LOCALISED)
    assert [cfg.stage_name(e) for e in range(5)] == ["warmup", "warmup", "main", "main", "main"]
    assert [cfg.stage_name(e, refine_from=3) for e in range(5)] == ["warmup", "warmup", "main", "refine", "refine"]
    warm = cfg.stage(0)
    # the warm-up drops the dynamics term only: the BCE term concentrates the heatmaps
    assert (warm.dynamics_weight, warm.bce_weight, warm.sigma) == (0.0, 1.0, 0.25)
    assert cfg.stage(2) is cfg
    refine = cfg.stage(4, refine_from=3)
    assert (refine.num_predicted_steps, refine.dynamics_lr_factor, refine.sigma) == (3, 1.0, cfg.sigma)
    # without warmup_sigma the warm-up keeps the configured width
    assert TrainConfig(**TINY, num_epochs=2, warmup_epochs=1).stage(0).sigma == 0.1
    # the foreground term belongs to the warm-up alone
    fg = TrainConfig(**TINY, num_epochs=5, warmup_epochs=1, warmup_foreground_weight=2.0, **LOCALISED)
    assert [fg.stage(e, refine_from=3).warmup_foreground_weight for e in range(5)] == [2.0, 0.0, 0.0, 0.0, 0.0]
    # refine_when "epoch": the last refine_epochs, whatever was measured
    fixed = TrainConfig(**TINY, num_epochs=4, refine_epochs=1, refine_num_predicted_steps=3)
    assert [fixed.stage_name(e, refine_from=1) for e in range(4)] == ["main"] * 3 + ["refine"]


@pytest.mark.parametrize("bad, message", [
    (dict(refine_when="soon"), "unknown refine_when 'soon'; allowed: epoch, localised"),
    (dict(refine_when="localised"), "refine_when 'localised' changes nothing"),
    (dict(**LOCALISED, refine_epochs=1), "refine_epochs must be 0"),
    (dict(warmup_epochs=3), r"warmup_epochs must be an integer in \[0, num_epochs - refine_epochs = 3\)"),
    (dict(warmup_epochs=-1), "warmup_epochs"),
    (dict(warmup_epochs=True), "warmup_epochs must be an integer"),
    (dict(warmup_sigma=0.2), "warmup_sigma needs warmup_epochs > 0"),
    (dict(warmup_epochs=1, warmup_sigma=0.0), "warmup_sigma must be a finite number > 0, got 0.0"),
    (dict(**LOCALISED, localised_ratio=float("nan")), "localised_ratio must be a finite number > 0"),
    (dict(warmup_foreground_weight=1.0), "warmup_foreground_weight = 1.0 needs warmup_epochs > 0"),
    (dict(warmup_epochs=1, warmup_foreground_weight=-1.0), "warmup_foreground_weight must be a finite number >= 0"),
])
def test_bad_schedule_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**TINY, "num_epochs": 3, **bad})


# ---- the measured switch, through kills and resumes ------------------------------------------------
def _scripted_ratio(monkeypatch, ratios):
    """Make the validation's reconstruction ratio of the k-th validated epoch ``ratios[k]``."""
    real = REAL_AUTOENCODING
    calls = []

    def fake(model, params, dataset, max_sequences=16):
        out = real(model, params, dataset, max_sequences)
        calls.append(out["reconstruction_ratio"])
        return {**out, "reconstruction_ratio": ratios[len(calls) - 1]}
    monkeypatch.setattr(E, "autoencoding", fake)
    return calls


def test_refine_starts_after_the_first_localised_epoch(tiny_cache, tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY, num_epochs=5, warmup_epochs=1, warmup_sigma=0.3, localised_ratio=0.5, **LOCALISED)
    # epoch 1 (warm-up) is "localised" but does not count; epoch 3 is the first localised main epoch
    measured = _scripted_ratio(monkeypatch, [0.1, 0.9, 0.4, 0.9, 0.9])
    built = []
    real = T.make_train_step

    def recording(c, m, background=None):
        built.append((c.dynamics_weight, c.bce_weight, m.sigma, c.num_predicted_steps, c.dynamics_lr_factor))
        return real(c, m, background)
    monkeypatch.setattr(T, "make_train_step", recording)
    T.train(cfg, tmp_path / "run", cache_dir=tiny_cache, progress=False, gif=False)
    assert len(measured) == 5 and all(0 < r for r in measured)  # the real ratio is computed every epoch
    assert _stages(tmp_path / "run") == ["warmup", "main", "main", "refine", "refine"]
    records = rundir.read_metrics(tmp_path / "run")
    assert [r.get("refine_from") for r in records] == [None, None, 4, None, None]
    assert built == [(0.0, 1.0, 0.3, 2, 0.2), (1.0, 1.0, 0.1, 2, 0.2), (1.0, 1.0, 0.1, 3, 1.0)]
    assert all("val/reconstruction_ratio" in r and "val/encoded_constraint_residual" in r for r in records)


def test_never_localised_never_refines(tiny_cache, tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY, num_epochs=3, localised_ratio=0.5, **LOCALISED)
    _scripted_ratio(monkeypatch, [0.9, 0.8, 0.7])
    T.train(cfg, tmp_path / "run", cache_dir=tiny_cache, progress=False, gif=False)
    assert _stages(tmp_path / "run") == ["main"] * 3


def test_measured_switch_survives_kill_and_resume(tiny_cache, tmp_path, monkeypatch):
    """Killed in the epoch after the switch was measured; the resumed run keeps the switch (it is
    in the checkpoint, not re-measured) and ends with the uninterrupted run's weights."""
    cfg = TrainConfig(**TINY, num_epochs=4, warmup_epochs=1, localised_ratio=0.5, **LOCALISED)
    ratios = [0.9, 0.4, 0.9, 0.9]
    _scripted_ratio(monkeypatch, ratios)
    T.train(cfg, tmp_path / "full", cache_dir=tiny_cache, progress=False, gif=False)

    _scripted_ratio(monkeypatch, ratios)
    real = kill_training_at_step(monkeypatch, 2)  # the first step of epoch 3 (one step per epoch)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path / "killed", cache_dir=tiny_cache, progress=False, gif=False)
    monkeypatch.setattr(T, "make_train_step", real)
    assert _stages(tmp_path / "killed") == ["warmup", "main"]
    _scripted_ratio(monkeypatch, [0.9, 0.9])  # epochs 3-4 measure "not localised": the switch stays
    T.train(cfg, tmp_path / "killed", resume=True, cache_dir=tiny_cache, progress=False, gif=False)
    assert _stages(tmp_path / "killed") == _stages(tmp_path / "full") == ["warmup", "main", "refine", "refine"]
    for weights in ("last", "best"):
        full = rundir.load_model(tmp_path / "full", weights)[1]
        resumed = rundir.load_model(tmp_path / "killed", weights)[1]
        for a, b in zip(_leaves(full), _leaves(resumed)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---- best-epoch weights ------------------------------------------------------------------------
def _scripted_vpt(monkeypatch, means):
    real = REAL_EVALUATE_VPT
    calls = []

    def fake(model, params, dataset):
        out = real(model, params, dataset)
        calls.append(1)
        return {**out, "mean": means[min(len(calls), len(means)) - 1]}
    monkeypatch.setattr(E, "evaluate_vpt", fake)


def _checkpoint_params_by_epoch(monkeypatch):
    """Record the params of every checkpoint training writes, by epoch."""
    saved = {}
    real = T.checkpoint.save

    def spy(path, tree):
        real(path, tree)
        if path.name == rundir.CHECKPOINT:
            saved[int(tree["epoch"])] = _leaves(tree["params"])
    monkeypatch.setattr(T.checkpoint, "save", spy)
    return saved


def test_best_weights_are_the_best_recorded_epoch(tiny_cache, tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY, num_epochs=4, warmup_epochs=1)
    # the warm-up's 9.0 is the highest but renders other Gaussian maps: never the best
    _scripted_vpt(monkeypatch, [9.0, 1.0, 5.0, 2.0, 5.0])  # the 5th call evaluates the best weights at the end
    by_epoch = _checkpoint_params_by_epoch(monkeypatch)
    run = tmp_path / "run"
    T.train(cfg, run, cache_dir=tiny_cache, progress=False, gif=False)
    records = rundir.read_metrics(run)
    assert [r["val/vpt_mean"] for r in records] == [9.0, 1.0, 5.0, 2.0]
    assert rundir.read_best(run) == {"epoch": 3, "val_vpt_mean": 5.0}
    assert rundir.weights_origin(run) == {"weights": "best", "epoch": 3, "val_vpt_mean": 5.0}
    assert rundir.weights_origin(run, "last") == {"weights": "last", "epoch": 4, "val_vpt_mean": 2.0}
    for a, b in zip(_leaves(rundir.load_model(run)[1]), by_epoch[3]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(rundir.load_model(run, "last")[1]), by_epoch[4]):
        np.testing.assert_array_equal(a, b)
    vpt = json.loads((run / rundir.VPT).read_text())
    assert (vpt["weights"], vpt["epoch_of_weights"]) == ("best", 3)
    # resume continues from the last epoch, not the best
    state, epochs, _, _ = T.load_checkpoint(run, cfg, T.KeyCLD.from_config(cfg))
    assert epochs == 4 and int(state.step) == 4
    with pytest.raises(ValueError, match="weights must be one of best, last, got 'first'"):
        rundir.load_model(run, "first")


def test_kill_between_checkpoint_and_best_weights(tiny_cache, tmp_path, monkeypatch):
    """The epoch whose checkpoint was written but whose best weights were not becomes the best
    on resume (its weights are the checkpoint's)."""
    cfg = TrainConfig(**TINY, num_epochs=3)
    _scripted_vpt(monkeypatch, [1.0, 4.0, 2.0, 4.0])
    real_save_best = rundir.save_best

    def dying(run_dir, params, epoch, vpt, kind):
        if epoch == 2:
            raise KeyboardInterrupt
        real_save_best(run_dir, params, epoch, vpt, kind)
    monkeypatch.setattr(rundir, "save_best", dying)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path / "run", cache_dir=tiny_cache, progress=False, gif=False)
    assert rundir.read_best(tmp_path / "run")["epoch"] == 1
    epoch2 = _leaves(rundir.load_model(tmp_path / "run", "last")[1])
    monkeypatch.setattr(rundir, "save_best", real_save_best)
    _scripted_vpt(monkeypatch, [2.0, 4.0])
    T.train(cfg, tmp_path / "run", resume=True, cache_dir=tiny_cache, progress=False, gif=False)
    assert rundir.read_best(tmp_path / "run") == {"epoch": 2, "val_vpt_mean": 4.0}
    for a, b in zip(_leaves(rundir.load_model(tmp_path / "run")[1]), epoch2):
        np.testing.assert_array_equal(a, b)


def test_unvalidated_run_loads_its_last_weights(tiny_cache, tmp_path):
    cfg = TrainConfig(**TINY, num_epochs=1)
    T.train(cfg, tmp_path / "run", cache_dir=tiny_cache, progress=False, gif=False, validate=False)
    assert not (tmp_path / "run" / rundir.BEST).exists()
    assert rundir.weights_file(tmp_path / "run").name == rundir.CHECKPOINT
    assert rundir.weights_origin(tmp_path / "run")["weights"] == "last"


def test_export_defaults_to_the_best_epoch_and_says_so(tiny_cache, tmp_path, monkeypatch):
    from keycld_gym import loading, zoo
    from test_faults import _fake_bank

    cfg = TrainConfig(**TINY, num_epochs=3, warmup_epochs=1, warmup_sigma=0.2)
    _scripted_vpt(monkeypatch, [4.0, 3.0, 1.0, 3.0])  # the warm-up epoch's 4.0 does not count
    run = tmp_path / "run"
    T.train(cfg, run, cache_dir=tiny_cache, progress=False, gif=False)
    monkeypatch.setattr(loading, "build_bank", _fake_bank)
    best = zoo.export(run, tmp_path / "best", hardware="test", bank_size=2)
    last = zoo.export(run, tmp_path / "last", hardware="test", bank_size=2, weights="last")
    info = json.loads((best / rundir.MODEL_INFO).read_text())
    assert info["weights"] == {"weights": "best", "epoch": 2, "val_vpt_mean": 3.0}
    card = (best / rundir.MODEL_CARD).read_text()
    assert "best validation epoch, epoch 2 of 3 (validation VPT 3.00" in card
    assert "warmup_epochs=1, warmup_sigma=0.2, warmup_foreground_weight=0.0" in card  # the schedule
    assert "last epoch, epoch 3 of 3" in (last / rundir.MODEL_CARD).read_text()
    for a, b in zip(_leaves(rundir.load_model(best)[1]), _leaves(rundir.load_model(run, "best")[1])):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(rundir.load_model(last)[1]), _leaves(rundir.load_model(run, "last")[1])):
        np.testing.assert_array_equal(a, b)
    # the run's vpt.json evaluated the best weights: the best export keeps it, the last one does not
    assert (best / rundir.VPT).exists() and not (last / rundir.VPT).exists()
    assert rundir.weights_origin(best) == info["weights"]


# ---- the warm-up's foreground term -------------------------------------------------------------
def _blob_frames(centres, size=64):
    """(T, 64, 64, 3) uint8: grey background, a white 6×6 square at each (row, col) centre."""
    frames = np.full((len(centres), size, size, 3), 60, np.uint8)
    for t, (r, c) in enumerate(centres):
        frames[t, r - 3:r + 3, c - 3:c + 3] = 255
    return frames


def test_background_image_is_the_static_part():
    from keycld.data import background_image

    frames = _blob_frames([(10 + 4 * t, 12 + 5 * t) for t in range(9)])[None]  # (1, 9, 64, 64, 3)
    bg = background_image(frames)
    assert bg.shape == (64, 64, 3) and bg.dtype == np.float32
    np.testing.assert_allclose(bg, 60 / 255, atol=1e-6)  # the moving square is not background


def test_foreground_term_draws_heatmaps_to_what_moves():
    import jax.numpy as jnp
    from keycld.losses import foreground_attention

    frames = _blob_frames([(20, 40), (44, 16)])
    images = jnp.asarray(frames, jnp.float32) / 255.0
    background = jnp.full((64, 64, 3), 60 / 255, jnp.float32)
    on = np.zeros((2, 64, 64, 1), np.float32)
    on[0, 17:23, 37:43], on[1, 41:47, 13:19] = 1.0, 1.0
    on /= on.sum(axis=(1, 2), keepdims=True)
    elsewhere = np.roll(on, 20, axis=2)
    uniform = np.full_like(on, 1 / 4096)
    loss = lambda p: float(foreground_attention(jnp.asarray(p) * 0.999 + 0.001 / 4096, images, background))
    # on the foreground: the entropy of the 36 foreground pixels; elsewhere: far worse
    assert loss(on) == pytest.approx(np.log(36), abs=0.01)
    assert loss(uniform) == pytest.approx(np.log(4096), abs=0.01)
    assert loss(on) < loss(uniform) < loss(elsewhere)
    # from a flat heatmap, the logits' gradient raises the foreground and lowers the rest
    logits = jnp.zeros((2, 64, 64, 1))
    g = np.asarray(jax.grad(lambda z: foreground_attention(jax.nn.softmax(z.reshape(2, -1, 1), axis=1)
                                                           .reshape(z.shape), images, background))(logits))
    fg = on > 0
    assert (g[fg] < 0).all() and (g[~fg] > 0).all()


@pytest.mark.parametrize("kill_at", [1, 2])  # in the warm-up's second epoch / in the main stage
def test_foreground_warmup_survives_kill_and_resume(tiny_cache, tmp_path, monkeypatch, kill_at):
    """The background is recomputed from the data on a resume inside the warm-up; after it the
    main stage needs none. Both end with the uninterrupted run's weights."""
    cfg = TrainConfig(**TINY, num_epochs=3, warmup_epochs=2, warmup_foreground_weight=1.0)
    T.train(cfg, tmp_path / "full", cache_dir=tiny_cache, progress=False, gif=False, validate=False)
    real = kill_training_at_step(monkeypatch, kill_at)  # one step per epoch
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path / "killed", cache_dir=tiny_cache, progress=False, gif=False, validate=False)
    monkeypatch.setattr(T, "make_train_step", real)
    T.train(cfg, tmp_path / "killed", resume=True, cache_dir=tiny_cache, progress=False, gif=False, validate=False)
    assert _stages(tmp_path / "killed") == ["warmup", "warmup", "main"]
    full = rundir.load_model(tmp_path / "full", "last")[1]
    resumed = rundir.load_model(tmp_path / "killed", "last")[1]
    for x, y in zip(_leaves(full), _leaves(resumed)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_foreground_warmup_trains_and_needs_the_background(tiny_cache, tmp_path):
    from keycld.model.keycld import KeyCLD

    cfg = TrainConfig(**TINY, num_epochs=2, warmup_epochs=1, warmup_foreground_weight=1.0)
    with pytest.raises(ValueError, match="warmup_foreground_weight = 1.0 needs the training data's background"):
        T.make_train_step(cfg, KeyCLD.from_config(cfg))
    with pytest.raises(ValueError, match=r"background must be a float32 \(64, 64, 3\) image in \[0, 1\], got uint8"):
        T.make_train_step(cfg, KeyCLD.from_config(cfg), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="needs a heatmap model"):
        TrainConfig(**{**TINY, "model": "fc"}, num_epochs=2, warmup_epochs=1, warmup_foreground_weight=1.0)
    T.train(cfg, tmp_path / "run", cache_dir=tiny_cache, progress=False, gif=False, validate=False)
    records = rundir.read_metrics(tmp_path / "run")
    assert [r["stage"] for r in records] == ["warmup", "main"]
    assert records[0]["train/foreground"] > 0 and "train/foreground" not in records[1]
