"""agents.ppo_jax: the jitted PPO learns, seeds reproduce, the saved policy round-trips and is checked."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import ppo_jax as P

TINY = dict(num_envs=16, num_steps=16, num_minibatches=4, update_epochs=2, hidden=(16, 16))
UPDATES = 40


@pytest.fixture(scope="module")
def env_params():
    """The shipped cartpole model (loads in seconds; the tests need no particular dynamics)."""
    from keycld_gym.loading import load_env_params

    params, _ = load_env_params("cartpole", substeps=1)
    return params


def target_action_reward(obs, action, task_reward):
    """Dense test reward: 1 − (a − 0.5)² summed over the actions (best action 0.5)."""
    return 1.0 - jnp.sum((action - 0.5) ** 2)


@pytest.fixture(scope="module")
def trained(env_params):
    """A wide (std e ≈ 2.7), underactuated policy trained on the test reward in 4 chunks; the
    actions that reached the environment are recorded."""
    seen = []
    real_step = P.vector_step

    def spy(states, actions, *args, **kwargs):
        jax.debug.callback(lambda a: seen.append(np.asarray(a)), actions)
        return real_step(states, actions, *args, **kwargs)

    cfg = P.PPOConfig(system="cartpole", total_steps=16 * 16 * UPDATES, lr=3e-3, underactuated=True,
                      init_log_std=1.0, gain_low=0.5, damping=0.5, **TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "vector_step", spy)
        runner, rows = P.run_training(cfg, seed=0, chunks=4, progress=False, reward_fn=target_action_reward,
                                      env_params=env_params)
    return cfg, runner, rows, np.stack(seen)


def test_return_rises(trained):
    cfg, _, rows, _ = trained
    assert len(rows) == 4 and rows[-1]["env_steps"] == UPDATES * 16 * 16
    first, last = rows[0]["train_reward"], rows[-1]["train_reward"]
    assert last > first + 0.2, (first, last)


def test_actions_reach_the_env_inside_the_box(trained):
    *_, actions = trained
    assert actions.shape == (UPDATES * 16, 16, 2)
    assert np.all(np.abs(actions) <= 1.0) and np.all(actions[..., 1] == 0.0)
    # samples beyond the box reach it clipped (times a gain in [0.5, 1])
    assert np.mean(np.abs(actions[:16, :, 0]) >= 0.5) > 0.3


def test_seed_reproduces_bit_for_bit(env_params):
    cfg = P.PPOConfig(system="cartpole", total_steps=16 * 16 * 3, **TINY)
    _, _, train = P.make_train(cfg, env_params)
    train = jax.jit(train)
    a, b, c = (jax.device_get(train(jax.random.PRNGKey(s))[0]) for s in (1, 1, 2))
    leaves = lambda r: jax.tree_util.tree_leaves((r.params, r.stats))  # noqa: E731
    assert all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))
    assert not all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(c)))


def test_policy_round_trip_and_checks(trained, env_params, tmp_path):
    cfg, runner, rows, _ = trained
    run = "keycld_gym/models/cartpole"
    P.save_policy(tmp_path, cfg, runner, {"checkpoint": run, "env_steps": rows[-1]["env_steps"]})
    agent = P.policy_agent(tmp_path, "cartpole", run, underactuated=True)
    obs = np.asarray(P.F.observe(P.F.reset(jax.random.PRNGKey(3), env_params)))
    action = agent.act(obs, {})
    assert action.shape == (2,) and action.dtype == np.float32 and action[1] == 0.0
    assert 0.0 < action[0] <= 1.0  # the mean action moved towards the test reward's optimum 0.5 (from ≈ 0)
    loaded_cfg, tree, meta = P.load_policy(tmp_path)
    assert loaded_cfg == cfg and meta["env_steps"] == rows[-1]["env_steps"]
    np.testing.assert_array_equal(tree["obs_mean"], np.asarray(runner.stats.mean))

    with pytest.raises(ValueError, match="pendulum"):
        P.policy_agent(tmp_path, "pendulum", run)
    with pytest.raises(ValueError, match="underactuated"):
        P.policy_agent(tmp_path, "cartpole", run, underactuated=False)
    with pytest.raises(ValueError, match="checkpoint"):
        P.policy_agent(tmp_path, "cartpole", None, underactuated=True)
    with pytest.raises(ValueError, match=r"\(8,\)"):
        agent.act(obs[:4], {})

    bad = json.loads((tmp_path / P.CONFIG_FILE).read_text())
    bad["ppo"]["hidden"] = [32, 16]
    (tmp_path / P.CONFIG_FILE).write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="shape"):
        P.load_policy(tmp_path)
    (tmp_path / P.POLICY_FILE).unlink()
    with pytest.raises(ValueError, match="policy.msgpack is missing"):
        P.load_policy(tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    (dict(system="walker"), "unknown system 'walker'"),
    (dict(system="acrobot", reward="shaped"), "shaped"),
    (dict(system="pendulum", underactuated=True), "underactuated"),
    (dict(system="pendulum", num_envs=3, num_steps=5, num_minibatches=4, total_steps=100), "divisible"),
    (dict(system="pendulum", num_envs=4, num_steps=4, num_minibatches=1, total_steps=15), "at least one update"),
    (dict(system="pendulum", gamma=1.5), "gamma"),
    (dict(system="pendulum", lr=float("nan")), "lr"),
    (dict(system="pendulum", gain_low=0.0), "gain_low"),
    (dict(system="pendulum", damping=-1.0), "damping"),
    (dict(system="pendulum", velocity="exact"), "velocity"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.PPOConfig(**kwargs)


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        P.main(["--system", "acrobot", "--total_steps", "1000", "--underactuated"])
    assert "underactuated" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        P.main(["--system", "pendulum", "--total_steps", "0"])
    assert "positive integer" in capsys.readouterr().err
