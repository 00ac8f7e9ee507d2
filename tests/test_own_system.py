"""Your own system: the System spec, training from an npz of runs, resume, evaluate, export, and
the generic learned env ``KeyCLD-v0`` (with the example of examples/bead_on_wire.py, tiny)."""
from __future__ import annotations

import importlib.util
import re
import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import keycld_gym  # noqa: F401  (registers the ids)
from agents.cli import main as keycld_main
from keycld import System, rundir

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bead_on_wire.py"
TINY = ["--num_hidden_dim", "8", "--num_predicted_steps", "2", "--max_steps_per_epoch", "2", "--quiet", "--no_gif"]


def _example():
    spec = importlib.util.spec_from_file_location("bead_on_wire_test", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bead_runs(tmp_path_factory):
    """The example's simulator: 6 runs × 8 frames, per-step actions."""
    root = tmp_path_factory.mktemp("bead")
    frames, actions = _example().make_runs(6, 8, seed=0, hold=3)
    np.savez(root / "bead.npz", frames=frames, actions=actions)
    shutil.copy(EXAMPLE, root / "bead_system.py")  # deleted after training: the run keeps its own copy
    return root


@pytest.fixture(scope="module")
def bead_export(bead_runs):
    """Train one epoch, resume for a second, evaluate and export, with the spec file gone after
    the first command."""
    root = bead_runs
    run, out = root / "run", root / "export"
    assert keycld_main(["train", "--system", str(root / "bead_system.py"), "--data", str(root / "bead.npz"),
                        "--num_epochs", "1", "--out", str(run), *TINY]) == 0
    (root / "bead_system.py").unlink()
    assert keycld_main(["train", "--resume", str(run), "--num_epochs", "2", "--quiet", "--no_gif"]) == 0
    assert [m["epoch"] for m in rundir.read_metrics(run)] == [1, 2]
    assert keycld_main(["evaluate", str(run), "--quiet"]) == 0
    assert keycld_main(["export", str(run), "--out", str(out)]) == 0
    return run, out


def test_run_records_the_system_and_the_data(bead_export, bead_runs):
    run, out = bead_export
    cfg = rundir.load_config(run)
    assert cfg.user_data and cfg.environment == "bead" and cfg.system_attr == "SYSTEM"
    assert (cfg.num_runs, cfg.num_frames, cfg.init_mode, cfg.control) == (6, 8, None, None)
    assert (run / rundir.SYSTEM_SPEC).read_bytes() == EXAMPLE.read_bytes()
    system = rundir.load_system(run)
    assert (system.name, system.num_keypoints, system.action_dim, system.dt) == ("bead", 1, 1, 0.02)
    vpt = rundir.read_json(run / rundir.VPT)
    assert vpt["n"] == 1 and 0 <= vpt["mean"] <= 6 and "hold_last_frame" in vpt
    assert vpt["constraint_residual"]["mean"] >= 0
    assert (run / rundir.POTENTIAL).stat().st_size > 1000  # V over the encoded keypoints (no true states)
    assert {rundir.SYSTEM_SPEC, rundir.PARAMS, rundir.BANK, rundir.CONFIG, rundir.MODEL_CARD} <= {
        p.name for p in out.iterdir()}
    assert "your runs" in (out / rundir.MODEL_CARD).read_text()


def test_env_from_the_export_passes_the_checkers(bead_export, bead_runs, tmp_path):
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    _, out = bead_export
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)  # an export is self-contained: no data, no spec file, no MuJoCo
    data = bead_runs / "bead.npz"
    hidden = data.with_suffix(".hidden")
    data.rename(hidden)
    try:
        env = gym.make("KeyCLD-v0", checkpoint=str(moved))
        assert env.observation_space.shape == (4,) and env.action_space.shape == (1,)
        assert env.unwrapped.metadata["render_fps"] == 50
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gym_check_env(env.unwrapped)
            sb3_check_env(gym.make("KeyCLD-v0", checkpoint=str(moved)).unwrapped)
        obs, _ = env.reset(seed=0)
        obs, reward, term, trunc, info = env.step(np.array([0.5], np.float32))
        assert np.isfinite(reward) and 0.0 <= reward <= 1.0  # the System's own reward
        assert info["constraint_residual"] < 1e-3
        venv = gym.make_vec("KeyCLD-v0", num_envs=3, vectorization_mode="vector_entry_point", checkpoint=str(moved))
        obs, _ = venv.reset(seed=1)
        obs, rew, *_ = venv.step(np.zeros((3, 1), np.float32))
        assert obs.shape == (3, 4) and rew.shape == (3,)
    finally:
        hidden.rename(data)
    assert sorted(p.name for p in moved.iterdir()) == sorted(p.name for p in out.iterdir())  # nothing written


def test_frames_option_reproduces_the_vpt_initial_state(bead_export, bead_runs):
    """Resetting from a training run's first three frames gives that run's bank state (the VPT
    protocol: encode, central difference at the middle frame, projected onto Φ(x) = c)."""
    from keycld_gym import functional as F

    _, out = bead_export
    frames = np.load(bead_runs / "bead.npz")["frames"]
    env = gym.make("KeyCLD-v0", checkpoint=str(out)).unwrapped
    assert len(env.bank["states"]) == 5  # the 5 training runs
    for i in (0, 3):
        obs, _ = env.reset(options={"frames": frames[i, :3]})
        np.testing.assert_allclose(obs, env.bank["states"][i], atol=1e-5)
    # the same state as the model's own VPT start, up to the projection onto Φ(x) = c
    model, weights = env.params.model, env.params.weights
    x, xd = model.initial_state(weights, jnp.asarray(frames[0, :3], jnp.float32) / 255.0)
    px, pxd = F.project(x, xd, env.params)
    env.reset(options={"frames": frames[0, :3]})
    np.testing.assert_allclose(np.asarray(env.state.x), np.asarray(px), atol=1e-5)
    # ẋ: the model projects it at the encoded x, the env at the projected x (a 1e-3 difference)
    np.testing.assert_allclose(np.asarray(env.state.xd), np.asarray(pxd), rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("frames, match", [
    (np.zeros((3, 64, 64, 3), np.float32), "uint8"),
    (np.zeros((2, 64, 64, 3), np.uint8), r"shape \(3, 64, 64, 3\)"),
    (np.zeros((3, 32, 32, 3), np.uint8), r"shape \(3, 64, 64, 3\)"),
])
def test_frames_option_rejects_bad_frames(bead_export, frames, match):
    env = gym.make("KeyCLD-v0", checkpoint=str(bead_export[1])).unwrapped
    with pytest.raises(ValueError, match=match):
        env.reset(options={"frames": frames})
    with pytest.raises(ValueError, match="exclude each other"):
        env.reset(options={"frames": np.zeros((3, 64, 64, 3), np.uint8), "state": np.zeros(4)})


def test_state_option_is_projected_onto_the_manifold(bead_export):
    env = gym.make("KeyCLD-v0", checkpoint=str(bead_export[1])).unwrapped
    env.reset(options={"state": np.array([0.3, 0.5, 0.1, 0.0], np.float32)})  # off the wire
    assert abs(float(env.params.model.system.constraint(env.state.x)[0] - env.params.constraint_offset[0])) < 1e-4


def test_generic_env_needs_a_checkpoint():
    with pytest.raises(ValueError, match="checkpoint=DIR"):
        gym.make("KeyCLD-v0")
    with pytest.raises(ValueError, match="not a run or exported-model directory"):
        gym.make("KeyCLD-v0", checkpoint="/nonexistent")


# ---- bad input: each a clear error before any work ------------------------------------------
def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


GOOD_FRAMES = np.zeros((4, 6, 64, 64, 3), np.uint8)
GOOD_ACTIONS = np.zeros((4, 1), np.float32)


@pytest.mark.parametrize("arrays, match", [
    (dict(frames=GOOD_FRAMES.astype(np.float32), actions=GOOD_ACTIONS), "'frames' must be uint8"),
    (dict(frames=GOOD_FRAMES[0], actions=GOOD_ACTIONS), r"shape \(N, T, 64, 64, 3\)"),
    (dict(frames=np.zeros((4, 6, 32, 32, 3), np.uint8), actions=GOOD_ACTIONS), "must be 64×64, got 32×32"),
    (dict(frames=GOOD_FRAMES[:1], actions=GOOD_ACTIONS[:1]), "at least 2 are needed"),
    (dict(frames=GOOD_FRAMES[:, :2], actions=GOOD_ACTIONS), "at least 3 are needed"),
    (dict(frames=GOOD_FRAMES, actions=GOOD_ACTIONS.astype(np.int64)), "'actions' must be float32"),
    (dict(frames=GOOD_FRAMES, actions=np.zeros((4, 2), np.float32)), "action_dim = 1, the data 2"),
    (dict(frames=GOOD_FRAMES, actions=np.full((4, 6, 1), np.nan, np.float32)), "NaN/inf"),
    (dict(frames=GOOD_FRAMES), "lacks \\['actions'\\]"),
])
def test_bad_data_is_refused_before_work(tmp_path, capsys, arrays, match):
    data = _write(tmp_path / "runs.npz", **arrays)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        keycld_main(["train", "--system", str(EXAMPLE), "--data", data, "--out", str(out), *TINY])
    assert exc.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("extra, match", [
    (["--system", "EXAMPLE", "--environment", "pendulum"], "cannot be combined with --data"),
    (["--system", "EXAMPLE", "--num_runs", "3"], "cannot be combined with --data"),
    (["--system", "EXAMPLE", "--num_predicted_steps", "9"], "num_predicted_steps must be <= num_frames - 3"),
    (["--system", "EXAMPLE", "--batch_size", "5"], "batch_size"),
    (["--system", "EXAMPLE:NOPE"], "defines no 'NOPE'"),
    (["--system", "missing.py"], "does not exist"),
    (["--system", "pendulum"], "built-in paper task"),
])
def test_bad_flags_are_refused_before_work(tmp_path, capsys, extra, match):
    data = _write(tmp_path / "runs.npz", frames=GOOD_FRAMES, actions=GOOD_ACTIONS)
    out = tmp_path / "run"
    argv = [a.replace("EXAMPLE", str(EXAMPLE)) for a in extra]
    with pytest.raises(SystemExit) as exc:
        keycld_main(["train", *argv, "--data", data, "--out", str(out), "--quiet"])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_data_without_system_and_system_without_data(tmp_path, capsys):
    data = _write(tmp_path / "runs.npz", frames=GOOD_FRAMES, actions=GOOD_ACTIONS)
    with pytest.raises(SystemExit):
        keycld_main(["train", "--data", data])
    assert "--data needs --system" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        keycld_main(["train", "--system", str(EXAMPLE)])
    assert "needs --data" in capsys.readouterr().err


# ---- the System spec ---------------------------------------------------------------------------
def _phi(x):
    return jnp.array([x[0] ** 2 + x[1] ** 2 - 0.25])


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="has space"), "System.name"),
    (dict(num_keypoints=0), "System.num_keypoints must be a positive integer"),
    (dict(num_keypoints=1.5), "System.num_keypoints must be a positive integer"),
    (dict(action_dim=-1), "System.action_dim must be a positive integer"),
    (dict(dt=0.0), "System.dt must be a finite number > 0"),
    (dict(dt=float("nan")), "System.dt must be a finite number > 0"),
    (dict(action_scale=0), "System.action_scale must be a finite number > 0"),
    (dict(constraint="circle"), "System.constraint must be a function"),
    (dict(constraint=lambda x: jnp.zeros((1, 1))), "must return a 1-D array"),
    (dict(constraint=lambda x: x), "must return 0 < C < 2K = 2 values, got 2"),
    (dict(constraint=lambda x: jnp.array([jnp.nan])), "not finite at a random point"),
    (dict(constraint=lambda x: x.reshape(3, 3)), "System.constraint failed"),
    (dict(reward=lambda x, xd, u: x), "System.reward must return a scalar"),
    (dict(reward=lambda x, xd, u: jnp.dot(x, u)), "System.reward failed"),
])
def test_system_validation_names_the_field(kwargs, match):
    base = dict(name="ring", num_keypoints=1, action_dim=1, dt=0.05, constraint=_phi)
    with pytest.raises(ValueError, match=match):
        System(**{**base, **kwargs})


def test_system_without_constraint_or_reward():
    from keycld.model.keycld import KeyCLD
    from keycld_gym import functional as F

    free = System("free", num_keypoints=2, action_dim=1, dt=0.05, constraint=None)
    assert not free.constrained and free.num_constraints == 0
    model = KeyCLD(free, hidden=8)
    assert not model.dynamics.constrained
    params = F.EnvParams(weights=model.init(jax.random.PRNGKey(0)), bank=jnp.zeros((1, 8)), model=model,
                         constraint_offset=jnp.zeros((0,)))
    state, obs, reward, *_ = F.step(F.reset(jax.random.PRNGKey(0), params), jnp.zeros(1), params)
    assert float(reward) == 0.0 and obs.shape == (8,)


def test_per_step_actions_equal_a_held_action():
    """A (T, A) action sequence of one repeated value predicts what the constant action does."""
    from keycld.model.keycld import KeyCLD

    model = KeyCLD(_example().SYSTEM, hidden=8)
    params = model.init(jax.random.PRNGKey(1))
    x, xd = jnp.array([0.2, 0.8 * 0.04 - 0.6]), jnp.array([0.1, 0.0])
    u = jnp.array([0.7])
    held, _ = model.rollout(params, x, xd, u, 5)
    seq, _ = model.rollout(params, x, xd, jnp.tile(u, (5, 1)), 5)
    np.testing.assert_allclose(seq, held, rtol=1e-6, atol=1e-7)
    other, _ = model.rollout(params, x, xd, jnp.tile(u, (5, 1)).at[2].set(-0.7), 5)
    assert not np.allclose(other, held)


def test_atomic_writes_keep_ordinary_permissions(tmp_path):
    import os

    from keycld import fileio

    fileio.write_text(tmp_path / "a.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert not list(tmp_path.glob(".*.tmp"))


def test_example_script_writes_runs(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "runs.npz"
    subprocess.run([sys.executable, str(EXAMPLE), "--out", str(out), "--runs", "3", "--frames", "4"], check=True,
                   capture_output=True)
    with np.load(out) as z:
        assert z["frames"].shape == (3, 4, 64, 64, 3) and z["frames"].dtype == np.uint8
        assert z["actions"].shape == (3, 4, 1) and z["actions"].dtype == np.float32
