"""Training: loss decreases, resume equals an uninterrupted run, NaN handling, CLI parsing."""
import json
import shlex
from pathlib import Path

import jax
import numpy as np
import pytest

import keycld.train as T
from keycld import rundir
from keycld.systems import get as get_system
from keycld.config import TrainConfig
from keycld.data import DatasetConfig, load_dataset
from keycld.model.keycld import KeyCLD
from conftest import kill_training_at_step

TINY = dict(environment="pendulum", control="yes", num_runs=5, num_frames=8, num_hidden_dim=8,
            num_predicted_steps=2)


def _params(run_dir):
    model, params, _ = rundir.load_model(run_dir)
    return jax.tree_util.tree_leaves(params)


def test_loss_decreases(tiny_cache):
    cfg = TrainConfig(**TINY, learning_rate=3e-3)
    model = KeyCLD.from_config(cfg)
    ds = load_dataset(cfg.dataset_config(), cache_dir=tiny_cache, progress=False).split("train")
    state, step = T.init_state(cfg, model), T.make_train_step(cfg, model)
    losses = []
    for i in range(30):
        idx = np.array([i % len(ds)])
        state, terms = step(state, ds.frames[idx], ds.action[idx].astype(np.float32))
        losses.append(float(terms["loss"]))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])


@pytest.mark.parametrize("refine", [{}, dict(refine_epochs=1, refine_num_predicted_steps=3,
                                               refine_dynamics_lr_factor=1.0)], ids=["one-stage", "refine"])
def test_resume_equals_uninterrupted(tiny_cache, tmp_path, monkeypatch, refine):
    """Killed in epoch 2 and resumed (across the refine stage's start in the second case)."""
    cfg = TrainConfig(**TINY, num_epochs=3, **refine)
    full = T.train(cfg, tmp_path / "full", cache_dir=tiny_cache, progress=False, gif=False)
    # interrupt the second run in the middle of epoch 2 (after its first checkpoint)
    real = kill_training_at_step(monkeypatch, 6)  # 4 steps per epoch
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path / "killed", cache_dir=tiny_cache, progress=False, gif=False)
    monkeypatch.setattr(T, "make_train_step", real)
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(FileExistsError, match="use --resume"):
        T.train(cfg, tmp_path / "killed", cache_dir=tiny_cache, progress=False, gif=False)
    resumed = T.train(cfg, tmp_path / "killed", resume=True, cache_dir=tiny_cache, progress=False, gif=False)
    for a, b in zip(_params(tmp_path / "full"), _params(tmp_path / "killed")):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    lines = [json.loads(l) for l in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3]
    assert resumed["train/loss"] == full["train/loss"]
    assert json.loads((tmp_path / "killed" / "vpt.json").read_text())["mean"] == full["vpt"]["mean"]


def test_nan_stops_with_checkpoint_intact(tiny_cache, tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY, num_epochs=2)
    real = T.make_train_step

    def nan_make_train_step(c, m, background=None):
        inner = real(c, m, background)

        def step(state, frames, actions):
            if int(state.step) >= 5:
                actions = actions * np.nan
            return inner(state, frames, actions)
        return step

    monkeypatch.setattr(T, "make_train_step", nan_make_train_step)
    ckpt = tmp_path / "run" / "checkpoint.msgpack"
    saved = {}
    real_save = T.checkpoint.save

    def spy_save(path, tree):
        real_save(path, tree)
        if Path(path).name == rundir.CHECKPOINT:
            saved["bytes"] = Path(path).read_bytes()
    monkeypatch.setattr(T.checkpoint, "save", spy_save)
    with pytest.raises(T.TrainingDiverged, match=r"step 5 \(epoch 2\).*dynamics=nan.*loss=nan.*kept"):
        T.train(cfg, tmp_path / "run", cache_dir=tiny_cache, progress=False, gif=False)
    assert saved and ckpt.read_bytes() == saved["bytes"]  # the epoch-1 checkpoint, untouched
    rundir.load_model(tmp_path / "run")


def test_gif_and_evaluate_cli(tiny_cache, tmp_path, capsys):
    from keycld.cli import main
    cfg = TrainConfig(**TINY, num_epochs=1)
    T.train(cfg, tmp_path / "run", cache_dir=tiny_cache, progress=False, gif=True)
    assert (tmp_path / "run" / "gifs" / "epoch_001.gif").stat().st_size > 1000
    assert main(["evaluate", str(tmp_path / "run"), "--cache_dir", str(tiny_cache), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "VPT mean" in out and "constraint residual" in out
    assert (tmp_path / "run" / "potential.png").exists()
    v = json.loads((tmp_path / "run" / "vpt.json").read_text())
    assert 0 <= v["mean"] <= v["max_frames"] == 6 and len(v["per_sequence"]) == 1


COMMANDS = (Path(__file__).parent / "data" / "original_readme_commands.txt").read_text().splitlines()


@pytest.mark.parametrize("command", COMMANDS)
def test_original_readme_commands_parse(command):
    from keycld.train_cli import config_from_args, script_parser
    argv = shlex.split(command)
    script = argv[1]
    model = {"keycld/dm.py": "keycld", "ablations/no_constraint.py": "no_constraint",
             "ablations/node2.py": "node2"}[script]
    parser = script_parser(model, prog=script)
    if any(a.startswith("---") for a in argv):
        # the README's typo is rejected with a clear message rather than silently accepted
        with pytest.raises(SystemExit):
            parser.parse_args(argv[2:])
        fixed = [a[1:] if a.startswith("---") else a for a in argv[2:]]
        args = parser.parse_args(fixed)
    else:
        args = parser.parse_args(argv[2:])
    cfg = config_from_args(args, parser, model)
    assert cfg.model == model and cfg.batch_size == 1 and cfg.num_epochs == 40
    assert cfg.num_hidden_dim == 32 and cfg.learning_rate == 3e-4 and cfg.solver == "euler"


def test_bad_train_config():
    with pytest.raises(ValueError, match="unknown model 'mlp'; allowed: keycld, no_constraint, node2, fc"):
        TrainConfig(model="mlp")
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0, got -1"):
        TrainConfig(learning_rate=-1.0)
    with pytest.raises(ValueError, match="needs two actuators"):
        TrainConfig(environment="pendulum", control="underactuated")


def test_constraint_term_is_zero_on_the_manifold_and_grows_off_it():
    """The optional constraint term is mean Φ² of the encoded keypoints; off for no_constraint."""
    from keycld.losses import constraint_consistency

    model = KeyCLD.from_config(TrainConfig(environment="cartpole", num_hidden_dim=8))
    on = jax.numpy.array([[0.1, 0.0, 0.1, -0.5], [-0.2, 0.0, 0.1, 0.4]])  # y₁ = 0, length 0.5
    assert float(constraint_consistency(model, on)) < 1e-10
    off = on.at[:, 1].set(0.2)
    assert float(constraint_consistency(model, off)) == pytest.approx(
        float(np.mean(np.asarray(jax.vmap(get_system('cartpole').constraint)(off)) ** 2)), rel=1e-5)
    ablation = KeyCLD.from_config(TrainConfig(environment="cartpole", model="no_constraint", num_hidden_dim=8))
    assert float(constraint_consistency(ablation, off)) == 0.0


def test_constraint_weight_enters_the_loss(tiny_cache):
    """Same step, constraint_weight 0 vs 100: the loss differs by 100 × the reported term."""
    ds = load_dataset(DatasetConfig("pendulum", "random", "yes", 5, 8), cache_dir=tiny_cache,
                      progress=False).split("train")
    terms = {}
    for w in (0.0, 100.0):
        cfg = TrainConfig(**TINY, constraint_weight=w, augment=False)
        model = KeyCLD.from_config(cfg)
        _, terms[w] = T.make_train_step(cfg, model)(T.init_state(cfg, model), ds.frames[:1],
                                                    ds.action[:1].astype(np.float32))
    assert "constraint" not in terms[0.0] and float(terms[100.0]["constraint"]) > 0
    assert float(terms[100.0]["loss"]) == pytest.approx(
        float(terms[0.0]["loss"]) + 100.0 * float(terms[100.0]["constraint"]), rel=1e-5)
    with pytest.raises(ValueError, match="constraint_weight"):
        TrainConfig(**TINY, constraint_weight=-1.0)


def test_cpu_preset_keeps_the_loss_horizon_in_seconds():
    """--preset cpu predicts 0.08 s in the dynamics loss (0.32 s when refining): 4 pendulum steps,
    8 cartpole/acrobot steps; everything else is the same for every system."""
    from keycld.config import preset_fields
    from keycld.tasks import TASK_SPECS

    others = []
    for env in ("pendulum", "cartpole", "acrobot"):
        fields = preset_fields("cpu", env)
        assert fields["num_predicted_steps"] * TASK_SPECS[env].dt == pytest.approx(0.08)
        assert fields["refine_num_predicted_steps"] * TASK_SPECS[env].dt == pytest.approx(0.32)
        cfg = TrainConfig(environment=env, **fields)  # a valid configuration
        assert (cfg.warmup_epochs, cfg.refine_when, cfg.dynamics_lr_factor) == (1, "localised", 0.2)
        others.append({k: v for k, v in fields.items() if "num_predicted_steps" not in k})
    assert others[0] == others[1] == others[2]
    assert preset_fields("paper", "cartpole") == {}
    with pytest.raises(ValueError, match="preset"):
        preset_fields("gpu", "pendulum")


def test_cpu_preset_horizons_fit_the_datas_sequences():
    """A fine dt or short sequences cap the preset's horizons at num_frames - 3 steps, so the
    preset always gives a valid configuration."""
    import dataclasses

    from keycld.config import preset_fields
    from keycld.systems import get

    fine = dataclasses.replace(get("pendulum"), dt=0.002)  # 0.32 s = 160 steps
    assert preset_fields("cpu", fine)["refine_num_predicted_steps"] == TrainConfig.num_frames - 3
    short = preset_fields("cpu", "cartpole", num_frames=20)  # 0.08 s = 8 steps, 0.32 s = 32 steps
    assert (short["num_predicted_steps"], short["refine_num_predicted_steps"]) == (8, 17)
    TrainConfig(environment="cartpole", num_frames=20, **short)  # valid


def test_refine_stage_trains_the_last_epochs_with_its_settings(tiny_cache, tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY, num_epochs=3, max_steps_per_epoch=1, refine_epochs=2, refine_num_predicted_steps=3,
                      refine_dynamics_lr_factor=1.0)
    assert cfg.stage(0) is cfg and cfg.stage(1) == cfg.stage(2)
    assert (cfg.stage(2).num_predicted_steps, cfg.stage(2).dynamics_lr_factor) == (3, 1.0)
    assert TrainConfig(**TINY, num_epochs=2, refine_epochs=1, refine_num_predicted_steps=3).stage(1).dynamics_lr_factor \
        == cfg.dynamics_lr_factor
    built = []
    real = T.make_train_step

    def recording(c, m, background=None):
        built.append((c.num_predicted_steps, c.dynamics_lr_factor))
        return real(c, m, background)

    monkeypatch.setattr(T, "make_train_step", recording)
    T.train(cfg, tmp_path / "run", cache_dir=tiny_cache, progress=False, gif=False, validate=False)
    assert built == [(2, 0.2), (3, 1.0)]  # one step function per stage, in order
    saved = TrainConfig.load(tmp_path / "run" / "config.json")
    assert saved == cfg and saved.stage(2).num_predicted_steps == 3
    # the refine stage's dynamics move 5x faster (Adam: the update scales with the rate)
    monkeypatch.setattr(T, "make_train_step", real)
    moved = []
    for factor in (0.2, 1.0):
        c = TrainConfig(**TINY, num_epochs=1, dynamics_lr_factor=factor)
        m = KeyCLD.from_config(c)
        s0 = T.init_state(c, m)
        p0 = np.asarray(jax.tree_util.tree_leaves(s0.params["dynamics"])[0]).copy()
        ds = load_dataset(c.dataset_config(), cache_dir=tiny_cache, progress=False).split("train")
        s1, _ = T.make_train_step(c, m)(s0, ds.frames[:1], ds.action[:1].astype(np.float32))
        moved.append(float(np.abs(np.asarray(jax.tree_util.tree_leaves(s1.params["dynamics"])[0]) - p0).max()))
    assert moved[1] == pytest.approx(5 * moved[0], rel=1e-3)


@pytest.mark.parametrize("bad, message", [
    (dict(refine_epochs=4, refine_num_predicted_steps=3), "refine_epochs must be an integer in \\[0, num_epochs = 3\\]"),
    (dict(refine_epochs=-1), "refine_epochs"),
    (dict(refine_epochs=1), "changes nothing"),
    (dict(refine_epochs=1, refine_num_predicted_steps=6), "refine_num_predicted_steps must be .* got 6"),
    (dict(refine_epochs=1, refine_dynamics_lr_factor=float("nan")), "refine_dynamics_lr_factor"),
])
def test_bad_refine_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**TINY, num_epochs=3, **bad)


def test_refine_flags_build_the_two_stage_recipe_in_one_run():
    """The shipped pendulum's two stages as one command (a fixed refine stage); the cpu preset
    refines on a measured criterion instead, so it refuses a fixed refine_epochs."""
    from keycld.train_cli import config_from_args, script_parser

    parser = script_parser("keycld")
    base = ["--environment", "pendulum", "--control", "yes", "--num_hidden_dim", "16"]
    assert config_from_args(parser.parse_args(base), parser, "keycld").refine_epochs == 0
    args = parser.parse_args(base + ["--num_epochs", "13", "--refine_epochs", "3", "--refine_num_predicted_steps", "8",
                                     "--refine_dynamics_lr_factor", "1"])
    cfg = config_from_args(args, parser, "keycld")
    stages = [(s.num_predicted_steps, s.dynamics_lr_factor) for s in map(cfg.stage, range(cfg.num_epochs))]
    assert stages == [(4, 0.2)] * 10 + [(8, 1.0)] * 3
    with pytest.raises(SystemExit):
        config_from_args(parser.parse_args(base + ["--refine_epochs", "41", "--refine_num_predicted_steps", "8"]),
                         parser, "keycld")
    with pytest.raises(SystemExit):  # the preset's refine stage starts when measured
        config_from_args(parser.parse_args(base + ["--preset", "cpu", "--refine_epochs", "3"]), parser, "keycld")
    # with refine_when given as epoch, the preset's refine settings apply to the last epochs
    args = parser.parse_args(base + ["--preset", "cpu", "--refine_when", "epoch", "--refine_epochs", "3"])
    cfg = config_from_args(args, parser, "keycld")
    assert [cfg.stage_name(e) for e in range(cfg.num_epochs)] == ["warmup"] + ["main"] * 8 + ["refine"] * 3


def test_explicit_flags_override_the_preset():
    """An ablation at a shipped model's exact budget: --preset cpu with older settings."""
    from keycld.train_cli import config_from_args, script_parser

    parser = script_parser("no_constraint")
    args = parser.parse_args(["--environment", "acrobot", "--preset", "cpu", "--num_predicted_steps", "4",
                              "--dynamics_lr_factor", "1", "--num_epochs", "5", "--warmup_epochs", "0"])
    cfg = config_from_args(args, parser, "no_constraint")
    assert (cfg.num_hidden_dim, cfg.num_epochs, cfg.num_predicted_steps, cfg.dynamics_lr_factor,
            cfg.warmup_epochs, cfg.warmup_sigma) == (16, 5, 4, 1.0, 0, None)  # no warm-up: no warm-up width
    args = parser.parse_args(["--environment", "acrobot", "--preset", "cpu"])
    assert config_from_args(args, parser, "no_constraint").dynamics_lr_factor == 0.2
    args = parser.parse_args(["--environment", "acrobot", "--preset", "cpu", "--warmup_foreground_weight", "0.5"])
    assert config_from_args(args, parser, "no_constraint").warmup_foreground_weight == 0.5
    with pytest.raises(SystemExit):  # a foreground term needs a warm-up
        config_from_args(parser.parse_args(["--environment", "acrobot", "--warmup_foreground_weight", "1"]), parser)
    with pytest.raises(SystemExit):
        config_from_args(parser.parse_args(["--environment", "acrobot", "--dynamics_lr_factor", "0"]), parser)


def test_init_from_starts_with_the_source_weights(tiny_cache, tmp_path):
    """--init_from: a new run whose first weights are another run's, with a fresh optimiser."""
    cfg = TrainConfig(**TINY, num_epochs=1, max_steps_per_epoch=2)
    T.train(cfg, tmp_path / "source", cache_dir=tiny_cache, progress=False, gif=False, validate=False)
    tuned = TrainConfig(**{**TINY, "num_predicted_steps": 3}, init_from=str(tmp_path / "source"))
    state = T.initial_state(tuned, KeyCLD.from_config(tuned))
    for a, b in zip(_params(tmp_path / "source"), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(state.step) == 0
    fresh = T.init_state(tuned, KeyCLD.from_config(tuned))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree_util.tree_leaves(fresh.params), jax.tree_util.tree_leaves(state.params)))
    wider = TrainConfig(**{**TINY, "num_hidden_dim": 16}, init_from=str(tmp_path / "source"))
    with pytest.raises(ValueError, match="num_hidden_dim 8"):
        T.initial_state(wider, KeyCLD.from_config(wider))


def test_fine_tuned_budget_survives_without_its_source(tiny_cache, tmp_path):
    """Fine-tuning writes the source's budget into init_from.json, so the table still counts it
    once the source directory is gone (run directories are not committed; the results are)."""
    import json
    import shutil

    from keycld.rundir import INIT_FROM as INIT_FROM_FILE
    from keycld.vpt_table import summarize_run

    tiny = {**TINY, "max_steps_per_epoch": 2}
    T.train(TrainConfig(**tiny, num_epochs=2), tmp_path / "source", cache_dir=tiny_cache, progress=False,
            gif=False)
    T.train(TrainConfig(**tiny, num_epochs=1, init_from=str(tmp_path / "source")), tmp_path / "tuned",
            cache_dir=tiny_cache, progress=False, gif=False)
    saved = json.loads((tmp_path / "tuned" / INIT_FROM_FILE).read_text())
    assert (saved["epochs"], saved["steps"]) == (2, 4)
    shutil.rmtree(tmp_path / "source")
    s = summarize_run(tmp_path / "tuned")
    assert (s.prior_epochs, s.epochs, s.steps) == (2, 1, 6)
