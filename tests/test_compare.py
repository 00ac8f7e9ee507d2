"""keycld_gym.compare: real | learned side-by-side rollouts, files, validation, CLI."""
import json

import gymnasium as gym
import numpy as np
import pytest

import keycld_gym
from keycld_gym.compare import CompareResult, main, make_actions

T = 12


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, train_tiny_model):
    """A tiny trained pendulum model (h = 8, two steps)."""
    return train_tiny_model(tmp_path_factory.mktemp("compare"), "pendulum")


@pytest.fixture(scope="module")
def envs(checkpoint):
    learned = gym.make("KeyCLD-Pendulum-v0", checkpoint=checkpoint, bank_size=2)
    real = gym.make("KeyCLD-Pendulum-Real-v0", obs_type="keypoints", checkpoint=checkpoint)
    return learned, real


@pytest.fixture(scope="module")
def actions():
    return make_actions("random", T, 1, 0.02, seed=1)


@pytest.fixture(scope="module")
def result(envs, actions, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return keycld_gym.compare(*envs, actions, seed=3, out=out), out


def test_shapes_and_consistency(result, actions):
    res, _ = result
    assert isinstance(res, CompareResult) and res.steps == T
    assert res.real_keypoints.shape == res.learned_keypoints.shape == (T + 1, 4)
    assert res.keypoint_error.shape == (T + 1,)
    assert res.real_reward.shape == res.learned_reward.shape == res.reward_error.shape == (T,)
    assert res.real_frames.shape == res.learned_frames.shape == (T + 1, 64, 64, 3)
    assert res.real_frames.dtype == res.learned_frames.dtype == np.uint8
    np.testing.assert_array_equal(res.actions, actions)
    np.testing.assert_allclose(res.keypoint_error,
                               np.linalg.norm(res.real_keypoints[:, :2] - res.learned_keypoints[:, :2], axis=1),
                               rtol=1e-6)
    np.testing.assert_allclose(res.reward_error, np.abs(res.real_reward - res.learned_reward))
    assert res.keypoint_error[0] == 0.0 and res.keypoint_error[1:].max() > 0  # they do diverge
    s = res.summary()
    assert s["steps"] == T and s["max_keypoint_error"] >= s["mean_keypoint_error"] > 0
    assert s["real_return"] == pytest.approx(res.real_reward.sum())
    assert s["learned_return"] == pytest.approx(res.learned_reward.sum())


def test_initial_state_is_real_observation(result, checkpoint, actions):
    """The learned env starts from the real env's first keypoint observation, and the real
    side is exactly a plain real-env rollout with the same seed and actions."""
    res, _ = result
    real = gym.make("KeyCLD-Pendulum-Real-v0", obs_type="keypoints", checkpoint=checkpoint).unwrapped
    obs, _ = real.reset(seed=3)
    np.testing.assert_array_equal(res.learned_keypoints[0], obs)
    np.testing.assert_array_equal(res.real_keypoints[0], obs)
    np.testing.assert_array_equal(res.real_frames[0], real._frames[-1])
    rewards = [real.step(a)[1] for a in actions]
    np.testing.assert_array_equal(res.real_reward, rewards)
    other = gym.make("KeyCLD-Pendulum-Real-v0", obs_type="keypoints", checkpoint=checkpoint).unwrapped
    assert not np.array_equal(other.reset(seed=4)[0], obs)  # the seed matters


def test_same_seed_same_result(result, envs, actions):
    res, _ = result
    again = keycld_gym.compare(*envs, actions, seed=3)
    for field in ("real_keypoints", "learned_keypoints", "keypoint_error", "real_reward", "learned_reward",
                  "real_frames", "learned_frames"):
        np.testing.assert_array_equal(getattr(again, field), getattr(res, field), err_msg=field)


def test_output_files(result):
    res, out = result
    for name in ("compare.gif", "compare.json", "compare.png"):
        assert (out / name).stat().st_size > 0, name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    data = json.loads((out / "compare.json").read_text())
    assert len(data["steps"]) == T and [e["step"] for e in data["steps"]] == list(range(1, T + 1))
    assert data["steps"][-1]["keypoint_error"] == pytest.approx(res.keypoint_error[-1])
    assert data["summary"] == pytest.approx(res.summary())
    import imageio.v3 as iio
    video = iio.imread(out / "compare.gif", index=None)  # Pillow may merge identical frames
    assert 2 <= video.shape[0] <= T + 1 and video.shape[1:3] == (4 * 64, 4 * (2 * 64 + 2))
    left, right = video[0, ::4, :4 * 64:4, :3], video[0, ::4, 4 * 66::4, :3]

    def dist(a, b):  # the GIF palette changes colours a little
        return np.abs(a.astype(int) - b).mean()
    assert dist(left, res.real_frames[0]) < dist(left, res.learned_frames[0])  # real | learned
    assert dist(right, res.learned_frames[0]) < dist(right, res.real_frames[0])


def test_bad_actions(envs):
    with pytest.raises(ValueError, match="not finite at steps \\[2\\]"):
        keycld_gym.compare(*envs, np.array([[0.0], [0.1], [np.nan]], np.float32))
    with pytest.raises(ValueError, match="must have shape \\(T, 1\\)"):
        keycld_gym.compare(*envs, np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match="must have shape"):
        keycld_gym.compare(*envs, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="outside \\[-1, 1\\] at steps \\[1\\]"):
        keycld_gym.compare(*envs, np.array([[0.5], [-1.5], [1.0]], np.float32))
    with pytest.raises(ValueError, match="real episode ends after 1000"):
        keycld_gym.compare(*envs, np.zeros((1001, 1), np.float32))


def test_mismatched_envs(envs, checkpoint):
    learned, real = envs
    with pytest.raises(ValueError, match="system mismatch: model_env is 'pendulum', real_env is 'cartpole'"):
        keycld_gym.compare(learned, gym.make("KeyCLD-Cartpole-Real-v0"), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="obs_type='keypoints'"):
        keycld_gym.compare(learned, gym.make("KeyCLD-Pendulum-Real-v0", obs_type="pixels"), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="real_env must be a KeyCLDRealEnv"):
        keycld_gym.compare(learned, learned, np.zeros((2, 1)))
    with pytest.raises(ValueError, match="model_env must be a learned KeyCLDEnv"):
        keycld_gym.compare(real, real, np.zeros((2, 1)))


def test_make_actions():
    assert make_actions("zero", 4, 2, 0.01).shape == (4, 2)
    np.testing.assert_array_equal(make_actions("random", 5, 1, 0.02, 7), make_actions("random", 5, 1, 0.02, 7))
    s = make_actions("sine", 200, 2, 0.01)
    assert np.abs(s).max() <= 1 and s[0, 0] == 0 and s[0, 1] == pytest.approx(1)
    with pytest.raises(ValueError, match="unknown actions 'ramp'"):
        make_actions("ramp", 4, 1, 0.02)


def test_cli(checkpoint, tmp_path, capsys):
    assert main(["--system", "pendulum", "--checkpoint", checkpoint, "--steps", "5", "--actions", "sine",
                 "--seed", "3", "--bank-size", "2", "--out", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 5 and summary["seed"] == 3
    assert len(json.loads((tmp_path / "compare.json").read_text())["steps"]) == 5
    for argv in (["--system", "pendulum", "--steps", "0"], ["--system", "pendulum", "--actions", "ramp"],
                 ["--system", "pendulum", "--checkpoint", str(tmp_path)]):
        with pytest.raises(SystemExit):
            main(argv)
    assert "expected a positive integer" in capsys.readouterr().err
