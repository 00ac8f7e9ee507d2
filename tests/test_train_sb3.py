"""agents/train_sb3.py: SB3 training inside the learned model, judged on the real env (tiny, fast)."""
import json

import numpy as np
import pytest

from agents import train_sb3

TINY = dict(num_envs=4, eval_episodes=1, curve_episodes=1, eval_every_s=None, eval_max_steps=20,
            net_arch=[8, 8], env_kwargs={"bank_size": 4}, progress=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, train_tiny_model):
    """A tiny trained pendulum model (h = 8, a few steps)."""
    return train_tiny_model(tmp_path_factory.mktemp("sb3"), "pendulum")


def _curve(out):
    return [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]


def test_sac_in_learned_env(checkpoint, tmp_path):
    from stable_baselines3 import SAC

    out = tmp_path / "sac"
    row = train_sb3.train("sac", "KeyCLD-Pendulum-v0", 200, out, checkpoint=checkpoint,
                          algo_kwargs={"learning_starts": 50, "batch_size": 32}, **TINY)
    for name in ("model.zip", "config.json", "curve.jsonl", "curve.png", "results.json", "results.md",
                 "best.gif", "worst.gif"):
        assert (out / name).is_file(), name
    rows = _curve(out)
    assert len(rows) >= 2 and rows[0]["train_timesteps"] == 0 and rows[-1]["train_timesteps"] >= 200
    assert all(r["real_sim_samples"] == 0 for r in rows)
    assert all(np.isfinite(r["real_return_mean"]) and r["real_episodes"] == 1 for r in rows)
    assert [r["wall_clock_s"] for r in rows] == sorted(r["wall_clock_s"] for r in rows)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["trained_in"] == "learned" and cfg["real_sim_samples"] == 0 and cfg["timesteps_reached"] >= 200
    assert cfg["train_cpu_s"] > 0 and all(r["cpu_s"] >= 0 for r in rows)
    assert row["where"] == "real" and row["episodes"] == 1 and row["episodes_detail"][0]["steps"] == 20
    assert json.loads((out / "results.json").read_text())[0]["train"]["real_sim_samples"] == 0

    model = SAC.load(out / "model.zip", device="cpu")
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (5, 1) and np.all(np.abs(actions) <= 1.0)
    agent = train_sb3.SB3Agent(model)
    a = agent.act(obs[0], {})
    assert a.shape == (1,) and a.dtype == np.float32


def test_real_env_counts_samples_and_cpu_budget_stops(checkpoint, tmp_path):
    out = tmp_path / "real"
    train_sb3.train("td3", "KeyCLD-Pendulum-Real-v0", 10 ** 6, out, checkpoint=checkpoint, wall_clock_s=2.0,
                    clock="cpu", algo_kwargs={"learning_starts": 10, "batch_size": 16}, record=False, **TINY)
    rows = _curve(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["stopped_by"] == "wall_clock" and cfg["num_envs"] == 1
    assert cfg["clock"] == "cpu" and 0 < cfg["timesteps_reached"] < 10 ** 6 and cfg["train_cpu_s"] >= 2.0
    assert all(r["real_sim_samples"] == r["train_timesteps"] for r in rows)
    assert rows[-1]["real_sim_samples"] == cfg["timesteps_reached"]


def test_write_comparison(tmp_path):
    for kind, ret, samples in (("learned", 80.0, 0), ("real", 100.0, 5000)):
        d = tmp_path / kind
        d.mkdir()
        (d / "curve.jsonl").write_text(json.dumps({"wall_clock_s": 10.0, "train_timesteps": 5000,
                                                   "real_sim_samples": samples, "real_return_mean": ret,
                                                   "real_return_std": 1.0}) + "\n")
        (d / "config.json").write_text(json.dumps({"algo": "sac", "timesteps_reached": 5000,
                                                   "train_wall_clock_s": 10.0, "real_sim_samples": samples}))
        (d / "results.json").write_text(json.dumps([{"return_mean": ret, "return_std": 2.0,
                                                     "success_rate": 0.5, "episodes": 5}]))
    summary = train_sb3.write_comparison(str(tmp_path / "learned"), str(tmp_path / "real"), str(tmp_path))
    assert summary["ratio"] == pytest.approx(0.8)
    assert (tmp_path / "comparison.png").is_file() and "0.80" in (tmp_path / "comparison.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--algo", "dqn", "--env", "KeyCLD-Pendulum-v0", "--timesteps", "10"], "--algo"),
    (["--algo", "sac", "--env", "Pendulum-v1", "--timesteps", "10"], "--env"),
    (["--algo", "sac", "--env", "KeyCLD-Pendulum-v0", "--timesteps", "0"], "--timesteps"),
    (["--algo", "sac", "--env", "KeyCLD-Pendulum-v0", "--timesteps", "10", "--compare"], "--wall_clock_s"),
])
def test_bad_cli_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train_sb3.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_bad_function_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown env"):
        train_sb3.train("sac", "KeyCLD-Pendulum-v1", 10, tmp_path)
    with pytest.raises(ValueError, match="unknown algo"):
        train_sb3.train("a2c", "KeyCLD-Pendulum-v0", 10, tmp_path)
    with pytest.raises(ValueError, match="timesteps"):
        train_sb3.train("sac", "KeyCLD-Pendulum-v0", -5, tmp_path)
    with pytest.raises(ValueError, match="unknown clock"):
        train_sb3.train("sac", "KeyCLD-Pendulum-v0", 10, tmp_path, clock="gpu")
    assert train_sb3.parse_env_id("KeyCLD-Cartpole-Real-v0") == ("cartpole", True)
    assert train_sb3.parse_env_id("KeyCLD-Acrobot-v0") == ("acrobot", False)
