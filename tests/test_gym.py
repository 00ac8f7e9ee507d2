"""keycld_gym: checker-clean environments, determinism, invariants, vector env, rewards."""
import json
import warnings
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import keycld_gym
from keycld_gym import functional as F

SYSTEMS = {"pendulum": "Pendulum", "cartpole": "Cartpole", "acrobot": "Acrobot"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, train_tiny_model):
    """Tiny trained models (h = 8, a few steps) for each system."""
    root = tmp_path_factory.mktemp("gym")
    return {system: train_tiny_model(root, system) for system in SYSTEMS}


def _make(system, checkpoints, real=False, **kw):
    name = SYSTEMS[system]
    env_id = f"KeyCLD-{name}-Real-v0" if real else f"KeyCLD-{name}-v0"
    if not real:
        kw.setdefault("bank_size", 4)
    if not real or kw.get("obs_type") == "keypoints":
        kw["checkpoint"] = checkpoints[system]
    return gym.make(env_id, **kw)


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("obs_type", ["keypoints", "pixels"])
def test_learned_env_checkers(system, obs_type, checkpoints):
    env = _make(system, checkpoints, obs_type=obs_type, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)
    if obs_type == "keypoints":
        from stable_baselines3.common.env_checker import check_env as sb3_check
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sb3_check(env.unwrapped)
    assert env.unwrapped.__doc__ and "## Observation Space" in env.unwrapped.__doc__


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("obs_type", ["state", "pixels", "keypoints"])
def test_real_env_checkers(system, obs_type, checkpoints):
    env = _make(system, checkpoints, real=True, obs_type=obs_type, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.reset(seed=0)
    assert env.render().shape == (64, 64, 3)


def test_registered_without_import():
    spec = gym.spec("KeyCLD-Cartpole-v0")
    assert spec.entry_point == "keycld_gym.paper:KeyCLDCartpoleEnv"
    assert gym.spec("KeyCLD-Acrobot-Real-v0").entry_point.endswith("KeyCLDAcrobotRealEnv")


def test_same_seed_same_trajectory(checkpoints):
    def run():
        env = _make("cartpole", checkpoints)
        obs, _ = env.reset(seed=3)
        rng = np.random.default_rng(0)
        traj = [obs]
        for _ in range(50):
            traj.append(env.step(rng.uniform(-1, 1, 2).astype(np.float32))[0])
        return np.stack(traj)
    np.testing.assert_array_equal(run(), run())


@pytest.mark.parametrize("system", SYSTEMS)
def test_long_random_rollout_stays_valid(system, checkpoints):
    env = _make(system, checkpoints).unwrapped
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(1)
    for t in range(10_000):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        assert np.all(np.isfinite(obs)) and env.observation_space.contains(obs), (t, obs)
        assert info["constraint_residual"] < 1e-3, (t, info)
        assert np.isfinite(r) and not term
        if trunc:
            assert (t + 1) % 1000 == 0
            obs, _ = env.reset()


def test_bad_actions_and_options(checkpoints):
    env = _make("pendulum", checkpoints).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not finite"):
        env.step(np.array([np.nan], np.float32))
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(np.array([1.5], np.float32))
    with pytest.raises(ValueError, match="unknown obs_type 'rgb'"):
        _make("pendulum", checkpoints, obs_type="rgb")
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"angle": 1.0})
    state = np.asarray(env.bank["states"][1])  # on the env's manifold: taken bit for bit
    obs, info = env.reset(options={"state": state})
    np.testing.assert_array_equal(obs, state)
    obs, info = env.reset(options={"state": np.array([0.0, 0.5, 1.0, 0.0], np.float32)})  # off it: projected
    assert info["constraint_residual"] < 1e-4
    with pytest.raises(ValueError, match="must be 4 finite floats"):
        env.reset(options={"state": [0.0, 0.5]})


def test_functional_step_equals_env_step(checkpoints):
    env = _make("acrobot", checkpoints).unwrapped
    obs, _ = env.reset(seed=5)
    a = np.array([0.3, -0.7], np.float32)
    state = F.state_from_vector(jnp.asarray(obs))
    _, f_obs, f_rew, _, _ = jax.jit(F.step)(state, jnp.asarray(a), env.params)
    e_obs, e_rew, *_ = env.step(a)
    np.testing.assert_allclose(e_obs, np.asarray(f_obs), rtol=1e-6, atol=1e-6)
    assert e_rew == pytest.approx(float(f_rew), abs=1e-6)


def test_vector_env_autoreset(checkpoints):
    venv = gym.make_vec("KeyCLD-Pendulum-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        checkpoint=checkpoints["pendulum"], bank_size=4)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, 4) and venv.observation_space.contains(obs)
    bank = np.asarray(venv.unwrapped.params.bank)
    zero = np.zeros((3, 1), np.float32)
    for t in range(1000):
        obs, rew, term, trunc, info = venv.step(zero)
        assert not term.any()
        assert trunc.all() == (t == 999)
    obs, rew, term, trunc, info = venv.step(zero)  # next-step autoreset
    assert not trunc.any() and np.all(rew == 0)
    assert all(np.any(np.all(np.isclose(o, bank), axis=1)) for o in obs)


def test_sb3_vec_env_terminal_observation(checkpoints):
    from keycld_gym.vector import sb3_vec_env
    vec = sb3_vec_env("pendulum", 2, checkpoint=checkpoints["pendulum"], bank_size=4)
    vec.reset()
    for t in range(1000):
        obs, rew, done, infos = vec.step(np.zeros((2, 1), np.float32))
    assert done.all() and all(i["TimeLimit.truncated"] for i in infos)
    assert all(i["terminal_observation"].shape == (4,) for i in infos)


def test_keypoint_rewards_match_dm_control():
    """Keypoints placed by the true geometry give dm_control's reward (conventions check)."""
    from keycld.tasks import load_task
    from keycld import systems as R
    rng = np.random.default_rng(0)
    for system in SYSTEMS:
        env = load_task(system, random=0)
        env.reset()
        p = env.physics
        for _ in range(20):
            q = rng.uniform(-np.pi, np.pi, p.model.nq)
            v = rng.uniform(-3, 3, p.model.nv)
            ctrl = rng.uniform(-2, 2, p.model.nu)
            with p.reset_context():
                p.data.qpos[:], p.data.qvel[:], p.data.ctrl[:] = q, v, ctrl
            expected = env.task.get_reward(p)
            if system == "pendulum":
                th, w = q[0], v[0]
                x = 0.5 * np.array([np.sin(th), np.cos(th)])
                xd = 0.5 * w * np.array([np.cos(th), -np.sin(th)])
            elif system == "cartpole":
                c, th = q[0] / R.METRES_PER_UNIT["cartpole"], q[1]
                cd, w = v[0] / R.METRES_PER_UNIT["cartpole"], v[1]
                x = np.array([c, 0, c + 0.5 * np.sin(th), 0.5 * np.cos(th)])
                xd = np.array([cd, 0, cd + 0.5 * w * np.cos(th), -0.5 * w * np.sin(th)])
            else:
                a1, a2 = q[0], q[0] + q[1]
                p1 = 0.3 * np.array([np.sin(a1), np.cos(a1)])
                x = np.concatenate([p1, p1 + 0.3 * np.array([np.sin(a2), np.cos(a2)])])
                xd = np.zeros(4)
            got = float(R.get(system).reward(jnp.asarray(x), jnp.asarray(xd), jnp.asarray(ctrl)))
            assert got == pytest.approx(expected, abs=1e-4), (system, q, v)


def test_model_card_hardware_comes_from_the_epochs(checkpoints):
    """Every epoch records its device; export names them (a run resumed elsewhere lists both)."""
    from keycld.rundir import read_metrics
    from keycld_gym.zoo import _trained_on

    metrics = read_metrics(Path(checkpoints["pendulum"]))
    assert metrics and all(m["device"] == jax.devices()[0].device_kind for m in metrics)
    assert _trained_on([{"device": "NVIDIA H200"}, {"device": "NVIDIA H200"}, {"device": "cpu"}]) == "NVIDIA H200 then cpu"
    assert _trained_on([{"epoch": 1}]) is None


def test_exported_model_loads_without_rebuilding_the_bank(checkpoints, tmp_path, monkeypatch):
    """`keycld export`: a small params-only directory whose bank the envs reuse as is."""
    from keycld_gym import loading
    from keycld_gym.zoo import export

    out = export(checkpoints["pendulum"], tmp_path / "pendulum", hardware="test", notes="tiny", bank_size=4)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "params.msgpack", "reset_bank.npz", "model.json", "MODEL_CARD.md"} <= names
    assert "checkpoint.msgpack" not in names
    assert sum(p.stat().st_size for p in out.iterdir()) < 10 * 2 ** 20
    card = (out / "MODEL_CARD.md").read_text()
    assert "pendulum" in card and "hardware | test" in card

    original = _make("pendulum", checkpoints)

    def no_build(*a, **k):
        raise AssertionError("the exported bank should have been reused")
    monkeypatch.setattr(loading, "build_bank", no_build)
    exported = gym.make("KeyCLD-Pendulum-v0", checkpoint=str(out), bank_size=4)
    a, _ = exported.reset(seed=5)
    b, _ = original.reset(seed=5)
    np.testing.assert_array_equal(a, b)
    info = json.loads((out / "model.json").read_text())  # the export measured its RK4 sub-steps
    assert exported.unwrapped.params.substeps == info["substeps"] and info["substeps_error"] <= 1e-4
    assert original.unwrapped.params.substeps == 4  # a training run: the default
    same = gym.make("KeyCLD-Pendulum-v0", checkpoint=str(out), bank_size=4, substeps=4)
    same.reset(seed=5)
    act = np.array([0.3], np.float32)
    np.testing.assert_array_equal(same.step(act)[0], original.step(act)[0])
    np.testing.assert_allclose(exported.step(act)[0], original.unwrapped._obs(), atol=1e-4)


def test_real_env_frames_are_distinct_arrays(checkpoints):
    """Frames from the reused camera must not alias one buffer (velocities would read 0)."""
    env = _make("pendulum", checkpoints, real=True, obs_type="keypoints").unwrapped
    env.reset(seed=0)
    frames = env._frames
    assert not np.shares_memory(frames[0], frames[2])
    assert not np.array_equal(frames[0], frames[2])


@pytest.mark.parametrize("name", ["Pendulum", "Cartpole", "Acrobot"])
def test_shipped_model_works_out_of_the_box(name):
    env = gym.make(f"KeyCLD-{name}-v0")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, *_ = env.step(env.action_space.sample())
    assert np.all(np.isfinite(obs))


def test_shipped_cartpole_keypoints_track_cart_and_pole_tip():
    """Keypoint 1 of the shipped cartpole model sits on the cart (y = 0, moving with it) and
    keypoint 2 at the pole's tip (above the cart when upright, below when hanging): a model
    that tracks parts by height or parks a keypoint fails this, whatever its VPT."""
    from keycld_gym.loading import load_env_params, pose_keypoints

    params, _ = load_env_params("cartpole", bank_size=1)
    up_left = pose_keypoints("cartpole", params, (-0.5, 0.0))  # (x1, y1, x2, y2), image units
    down_right = pose_keypoints("cartpole", params, (0.5, np.pi))
    for kp in (up_left, down_right):
        assert abs(kp[1]) < 0.05, kp
    assert down_right[0] - up_left[0] > 0.2, (up_left, down_right)  # the cart moved 1 m
    assert up_left[3] - up_left[1] > 0.2 and down_right[3] - down_right[1] < -0.2, (up_left, down_right)
    assert abs(up_left[2] - up_left[0]) < 0.1 and abs(down_right[2] - down_right[0]) < 0.1


def test_reset_bank_cache_serves_its_rows_and_keeps_the_default_bank(checkpoints, tmp_path):
    """Requests inside the cached bank are its rows (nothing rebuilt or rewritten); another
    seed's bank does not replace the cached default (the shipped models' bank), but a default
    bank replaces another seed's."""
    import hashlib
    import shutil

    from keycld_gym.loading import BANK_FILE, load_env_params

    run = tmp_path / "run"
    shutil.copytree(checkpoints["cartpole"], run)
    (run / BANK_FILE).unlink(missing_ok=True)
    digest = lambda: hashlib.sha256((run / BANK_FILE).read_bytes()).hexdigest()
    _, big = load_env_params("cartpole", run, bank_size=3)
    before = digest()
    _, small = load_env_params("cartpole", run, bank_size=2, bank_seed=1)
    np.testing.assert_array_equal(small["states"], big["states"][1:3])
    np.testing.assert_array_equal(small["seeds"], [1, 2])
    _, other = load_env_params("cartpole", run, bank_size=1, bank_seed=5)
    np.testing.assert_array_equal(other["seeds"], [5])
    assert digest() == before
    (run / BANK_FILE).unlink()
    load_env_params("cartpole", run, bank_size=1, bank_seed=5)  # cached: nothing else was
    _, again = load_env_params("cartpole", run, bank_size=3)
    np.testing.assert_array_equal(again["states"], big["states"])
    with np.load(run / BANK_FILE) as z:
        np.testing.assert_array_equal(z["seeds"], [0, 1, 2])


def test_constraint_offset_fixes_the_manifold_of_the_env(checkpoints):
    """The env's states lie on Φ(x) = c, c the median Φ of encoded real frames, whatever the
    bank's size; the keypoint controllers' goal lies on the same manifold."""
    from agents.energy_shaping import goal_keypoints
    from keycld_gym.loading import load_env_params

    small, _ = load_env_params("cartpole", checkpoints["cartpole"], bank_size=2)
    large, bank = load_env_params("cartpole", checkpoints["cartpole"], bank_size=5, bank_seed=3)
    np.testing.assert_array_equal(np.asarray(small.constraint_offset), np.asarray(large.constraint_offset))
    phi = large.model.dynamics.phi
    c = np.asarray(large.constraint_offset)
    for s in bank["states"]:
        np.testing.assert_allclose(np.asarray(phi(jnp.asarray(s[:4]))), c, atol=1e-4)
    env = _make("cartpole", checkpoints)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_allclose(np.asarray(phi(jnp.asarray(obs[:4]))), c, atol=1e-4)
    np.testing.assert_allclose(np.asarray(phi(jnp.asarray(goal_keypoints("cartpole", large)))), c, atol=1e-3)
