"""The Gymnasium and SB3 contracts of the learned vector env and the registered ids: async and sync
vectorisation, the registry's time limit, vector rendering and video recording, per-environment
reset seeds/options, autoreset modes, pickling, and the errors on bad actions and start states."""
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import gymnasium as gym
import numpy as np
import pytest

import keycld_gym
from keycld_gym.vector import KeyCLDVectorEnv


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory, train_tiny_model):
    return train_tiny_model(tmp_path_factory.mktemp("vector"), "pendulum")


def _vec(checkpoint, n=3, **kw):
    return gym.make_vec("KeyCLD-Pendulum-v0", num_envs=n, checkpoint=checkpoint, bank_size=4, **kw)


def _single(checkpoint, **kw):
    return gym.make("KeyCLD-Pendulum-v0", checkpoint=checkpoint, bank_size=4, **kw)


ASYNC_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, gymnasium as gym
    import keycld_gym  # starts JAX in this process before the workers fork
    out = {}
    for name, env_id, kw in json.loads(sys.argv[1]):
        obs = {}
        for mode in ("async", "sync"):
            v = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, **kw)
            o, _ = v.reset(seed=5)
            a = np.full((2,) + v.single_action_space.shape, 0.25, np.float32)
            steps = [o] + [v.step(a)[0] for _ in range(3)]
            obs[mode] = np.stack(steps).tolist()
            v.close()
        out[name] = obs
    print("RESULT" + json.dumps(out))
""")


def test_async_and_sync_vector_envs_agree_under_fork(pendulum):
    """Gymnasium's default async context on Linux forks after JAX started (this script imports
    keycld_gym first): the workers must not hang, and must give the sync env's observations."""
    cases = [("learned", "KeyCLD-Pendulum-v0", {"checkpoint": pendulum, "bank_size": 4}),
             ("learned-keypoint-real", "KeyCLD-Pendulum-Real-v0", {"obs_type": "keypoints", "checkpoint": pendulum}),
             ("real", "KeyCLD-Cartpole-Real-v0", {})]
    proc = subprocess.run([sys.executable, "-c", ASYNC_SCRIPT, json.dumps(cases)], capture_output=True, text=True,
                          timeout=420, env={**os.environ, "MUJOCO_GL": "egl"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    for name, _, _ in cases:
        np.testing.assert_allclose(result[name]["async"], result[name]["sync"], rtol=1e-5, atol=1e-5, err_msg=name)
        assert np.asarray(result[name]["sync"]).shape[:2] == (4, 2)


def test_forked_process_gets_a_working_env(pendulum):
    """Constructing a learned env in a process forked after JAX started returns an out-of-process
    env with the same behaviour (the workers' case, without Gymnasium around it)."""
    env = _single(pendulum)
    ref = [env.reset(seed=2)[0]] + [env.step(np.array([0.5], np.float32))[0] for _ in range(2)]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            from keycld_gym.forking import RemoteEnv
            child = _single(pendulum)
            obs = [child.reset(seed=2)[0]] + [child.step(np.array([0.5], np.float32))[0] for _ in range(2)]
            remote = isinstance(child.unwrapped, RemoteEnv)
            child.close()
            os.write(write, json.dumps({"remote": remote, "obs": np.stack(obs).tolist()}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    os.waitpid(pid, 0)
    got = json.loads(data)
    assert got["remote"]
    np.testing.assert_allclose(got["obs"], np.stack(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("env_id", ["KeyCLD-v0", "KeyCLD-Pendulum-v0", "KeyCLD-Cartpole-v0", "KeyCLD-Acrobot-v0",
                                    "KeyCLD-Pendulum-Real-v0", "KeyCLD-Cartpole-Real-v0", "KeyCLD-Acrobot-Real-v0"])
def test_registry_time_limit(env_id):
    assert gym.spec(env_id).max_episode_steps == keycld_gym.MAX_EPISODE_STEPS == 1000


def test_time_limit_wrapper_and_env_counter_agree(pendulum):
    env = _single(pendulum)
    assert isinstance(env, gym.wrappers.TimeLimit) or "TimeLimit" in str(env)
    env.reset(seed=0)
    zero = np.zeros(1, np.float32)
    for t in range(1000):
        _, _, term, trunc, _ = env.step(zero)
        assert trunc == (t == 999) and not term
    assert env.unwrapped.state.t == 1000  # the functional counter says the same
    real = gym.make("KeyCLD-Pendulum-Real-v0")
    real.reset(seed=0)
    lengths = 0
    while True:
        lengths += 1
        if real.step(zero)[3]:
            break
    assert lengths == 1000 and real.unwrapped.remaining_steps == 0


def test_vector_render_matches_single_renders(pendulum):
    venv = _vec(pendulum, n=3, render_mode="rgb_array")
    obs, _ = venv.reset(seed=[4, 5, 6])
    frames = venv.render()
    assert isinstance(frames, tuple) and len(frames) == 3
    single = _single(pendulum, render_mode="rgb_array")
    for i, seed in enumerate([4, 5, 6]):
        o, _ = single.reset(seed=seed)
        np.testing.assert_array_equal(o, obs[i])
        np.testing.assert_array_equal(single.render(), frames[i])
    few = _vec(pendulum, n=3, render_mode="rgb_array", render_envs=2)
    few.reset(seed=0)
    assert len(few.render()) == 2
    assert KeyCLDVectorEnv(num_envs=20, checkpoint=pendulum, bank_size=4).render_envs == 16
    with pytest.raises(ValueError, match="render_envs must be <= num_envs"):
        _vec(pendulum, n=2, render_mode="rgb_array", render_envs=3)
    with pytest.raises(ValueError, match="unknown render_mode 'human'"):
        _vec(pendulum, n=2, render_mode="human")


def test_gymnasium_record_video(pendulum, tmp_path):
    pytest.importorskip("moviepy")
    from gymnasium.wrappers.vector import RecordVideo
    venv = RecordVideo(_vec(pendulum, n=2, render_mode="rgb_array"), str(tmp_path), step_trigger=lambda s: s == 0,
                       video_length=10)
    venv.reset(seed=0)
    for _ in range(12):
        venv.step(np.zeros((2, 1), np.float32))
    venv.close()
    videos = list(tmp_path.glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 1000


def test_sb3_video_recorder_and_images(pendulum, tmp_path):
    pytest.importorskip("moviepy")
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.vec_env import VecVideoRecorder

    from keycld_gym.vector import sb3_vec_env
    vec = sb3_vec_env("pendulum", 2, checkpoint=pendulum, bank_size=4, render_mode="rgb_array")
    vec.reset()
    images = vec.get_images()
    assert len(images) == 2 and all(i.shape == (64, 64, 3) and i.dtype == np.uint8 for i in images)
    rec = VecVideoRecorder(vec, str(tmp_path), record_video_trigger=lambda s: s == 0, video_length=8)
    rec.reset()
    for _ in range(10):
        rec.step(np.zeros((2, 1), np.float32))
    rec.close()
    assert list(tmp_path.glob("*.mp4"))


def test_vector_reset_seeds_options_and_mask(pendulum):
    venv = _vec(pendulum, n=3)
    single = _single(pendulum).unwrapped
    obs, _ = venv.reset(seed=[1, 2, 3])  # a list, as Gymnasium documents
    for i, s in enumerate([1, 2, 3]):
        np.testing.assert_array_equal(obs[i], single.reset(seed=s)[0])
    obs_int, _ = venv.reset(seed=1)  # an int s: environment i gets s + i
    np.testing.assert_array_equal(obs_int, obs)
    bank = np.asarray(venv.unwrapped.params.bank)
    states = np.stack([bank[1], bank[2], bank[1]])
    obs, _ = venv.reset(options={"state": states})
    np.testing.assert_array_equal(obs, states)  # on the manifold: bit for bit
    off = states.copy()
    off[1, :2] *= 1.3
    obs, _ = venv.reset(options={"state": off})
    np.testing.assert_array_equal(obs[[0, 2]], states[[0, 2]])
    single.reset(options={"state": off[1]})
    np.testing.assert_allclose(obs[1], single._obs(), atol=1e-6)  # projected as the single env does
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 3, 64, 64, 3), dtype=np.uint8)
    obs, _ = venv.reset(options={"frames": frames})
    for i in range(3):
        np.testing.assert_allclose(obs[i], single.reset(options={"frames": frames[i]})[0], atol=1e-5)
    before, _ = venv.reset(seed=7)
    after, _ = venv.reset(options={"state": states, "reset_mask": np.array([False, True, False])})
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    np.testing.assert_array_equal(after[1], states[1])
    for bad, match in [({"seed": [1, 2]}, "seed list has 2 entries"), ({"seed": [1, -2, 3]}, "seed of environment 1"),
                       ({"seed": 1.5}, "seed must be an integer"),
                       ({"options": {"state": states[:2]}}, r"must have shape \(3, 4\)"),
                       ({"options": {"state": np.where(np.eye(3, 4) > 0, np.nan, states)}},
                        r"options\['state'\]\[0\] .* is not finite"),
                       ({"options": {"frames": frames[:, :2]}}, r"options\['frames'\]\[0\] must have shape"),
                       ({"options": {"frames": frames, "state": states}}, "exclude each other"),
                       ({"options": {"reset_mask": [1, 0, 1]}}, "reset_mask'] must be a bool array"),
                       ({"options": {"angle": 1}}, "unknown reset options")]:
        with pytest.raises(ValueError, match=match):
            venv.reset(**bad)


def test_autoreset_modes(pendulum):
    zero = np.zeros((2, 1), np.float32)
    bank = np.asarray(_vec(pendulum, n=2).unwrapped.params.bank)

    def in_bank(o):
        return np.any(np.all(np.isclose(o, bank), axis=1))

    same = _vec(pendulum, n=2, autoreset_mode="same_step", max_episode_steps=5)
    assert same.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    same.reset(seed=0)
    for t in range(5):
        obs, rew, term, trunc, info = same.step(zero)
    assert trunc.all() and info["_final_obs"].all() and all(in_bank(o) for o in obs)
    assert info["final_obs"].shape == (2, 4) and not np.allclose(info["final_obs"], obs)
    assert set(info["final_info"]) >= {"energy", "constraint_residual"}
    disabled = _vec(pendulum, n=2, autoreset_mode=gym.vector.AutoresetMode.DISABLED, max_episode_steps=3)
    disabled.reset(seed=0)
    for t in range(5):
        obs, rew, term, trunc, info = disabled.step(zero)
        assert trunc.all() == (t >= 2)
    assert (disabled.unwrapped._states.t == 5).all()
    nxt = _vec(pendulum, n=2, max_episode_steps=3)
    nxt.reset(seed=0)
    for t in range(3):
        nxt.step(zero)
    obs, rew, term, trunc, info = nxt.step(zero)
    assert not trunc.any() and np.all(rew == 0) and all(in_bank(o) for o in obs)
    with pytest.raises(ValueError, match="unknown autoreset_mode 'sometimes'"):
        _vec(pendulum, n=2, autoreset_mode="sometimes")


def test_pickling_learned_and_rendering_real_envs(pendulum):
    a = np.array([0.3], np.float32)
    env = _single(pendulum, render_mode="rgb_array")
    env.reset(seed=1)
    env.render()
    copy = pickle.loads(pickle.dumps(env))
    np.testing.assert_array_equal(copy.step(a)[0], env.step(a)[0])
    real = gym.make("KeyCLD-Acrobot-Real-v0", render_mode="rgb_array")
    real.reset(seed=1)
    real.render()  # MuJoCo's scene exists now
    copy = pickle.loads(pickle.dumps(real))
    a2 = np.array([0.3, -0.2], np.float32)
    np.testing.assert_array_equal(copy.step(a2)[0], real.step(a2)[0])
    np.testing.assert_array_equal(copy.render(), real.render())


def test_bad_actions_name_the_problem(pendulum):
    env = _single(pendulum).unwrapped
    env.reset(seed=0)
    for bad in (np.array([0.5 + 1j]), np.array(["0.5"]), np.array([None], dtype=object)):
        with pytest.raises(ValueError, match="must be real numbers"):
            env.step(bad)
    with pytest.raises(ValueError, match=r"is not finite; allowed: 4 finite floats"):
        env.reset(options={"state": np.array([np.nan, 0.5, 0.0, 0.0])})
    venv = _vec(pendulum, n=3)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions of environment 1 \(\[nan\]\)"):
        venv.step(np.array([[0.0], [np.nan], [2.0]], np.float32))
    with pytest.raises(ValueError, match="must be real numbers"):
        venv.step(np.array([[0.1j], [0], [0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clipped = gym.wrappers.ClipAction(_single(pendulum))  # the documented way to bound a policy
        clipped.reset(seed=0)
        clipped.step(np.array([7.0], np.float32))


def test_ids_name_one_model_version(tmp_path):
    """Each named id carries its shipped model's version and weights' SHA-256; the shipped files
    are those of MODEL_VERSIONS; a retired version raises naming its release; a shipped model
    that is not the id's is refused."""
    import json

    from keycld import rundir
    from keycld_gym.loading import default_checkpoint, model_identity
    for name, system in keycld_gym.SYSTEMS.items():
        version, sha, _ = keycld_gym.MODEL_VERSIONS[system][-1]
        spec = gym.spec(keycld_gym.learned_id(name, version))
        assert spec.kwargs == {"model_version": version, "weights_sha256": sha}
        info = json.loads((default_checkpoint(system) / rundir.MODEL_INFO).read_text())
        assert (info["model_version"], info["weights_sha256"]) == (version, sha)
        assert rundir.weights_sha256(default_checkpoint(system)) == sha  # the file itself
        card = (default_checkpoint(system) / rundir.MODEL_CARD).read_text()
        assert f"| model version | {version} |" in card and sha in card
    env = gym.make("KeyCLD-Pendulum-v0")
    assert env.unwrapped.model_info["weights_sha256"] == keycld_gym.MODEL_VERSIONS["pendulum"][-1][1]
    with pytest.raises(ValueError, match="has weights_sha256 .* but this id names weights_sha256 'abc'"):
        model_identity("pendulum", None, 0, "abc")
    with pytest.raises(ValueError, match="has model_version 0, but this id names model_version 7"):
        gym.make("KeyCLD-Pendulum-v0", model_version=7)
    keycld_gym.register_versions("Testpendulum", "pendulum",
                                 [(0, "0" * 64, "0.0.1"), (1, keycld_gym.MODEL_VERSIONS["pendulum"][-1][1], "0.1.0")])
    try:
        with pytest.raises(gym.error.Error, match=r"KeyCLD-Testpendulum-v0 ran .* keycld-gym 0\.0\.1 .* "
                                                  r"KeyCLD-Testpendulum-v1"):
            gym.make("KeyCLD-Testpendulum-v0")
        with pytest.raises(gym.error.Error, match="keycld-gym 0.0.1"):
            gym.make_vec("KeyCLD-Testpendulum-v0", num_envs=2)
    finally:
        for v in (0, 1):
            gym.envs.registration.registry.pop(f"KeyCLD-Testpendulum-v{v}", None)
