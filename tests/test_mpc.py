"""agents.mpc: gradients of the planned return, predictions, the action Box, seeding, masks."""
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import keycld_gym  # noqa: F401  (registers the ids)
from agents.mpc import (DEFAULTS, UNDERACTUATED_DEFAULTS, MPCAgent, MPCConfig, default_config, dense_progress,
                        make_mpc, plan_return, terminal_energy)
from keycld import checkpoint, rundir
from keycld.config import TrainConfig
from keycld.model.keycld import KeyCLD
from keycld.train import _checkpoint_tree, init_state
from keycld_gym import functional as F
from keycld_gym.loading import load_model_params

SYSTEMS = {"pendulum": "Pendulum", "cartpole": "Cartpole"}
# Small planners: the same config object is reused so that the jitted planners compile once.
SMALL = MPCConfig(horizon=8, iterations=3, learning_rate=0.3, population=16, elites=4)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny models (h = 8) of the pendulum and the cartpole written as run directories.

    Initialised, not trained: compiling a training step costs ~30 s of CPU per system, and these
    tests only need a differentiable model of the right shape. The potential network is scaled
    up from its near-zero initialisation so that the dynamics have non-trivial forces.
    """
    root = tmp_path_factory.mktemp("mpc")
    out = {}
    for system in SYSTEMS:
        cfg = TrainConfig(environment=system, num_runs=3, num_frames=6, num_hidden_dim=8,
                          num_predicted_steps=2, num_epochs=1, max_steps_per_epoch=2)
        state = init_state(cfg, KeyCLD.from_config(cfg))
        dyn = state.params["dynamics"]["params"]
        dyn["potential_net"] = jax.tree_util.tree_map(lambda w: 30.0 * w, dyn["potential_net"])
        run_dir = root / system
        run_dir.mkdir()
        cfg.save(run_dir / rundir.CONFIG)
        checkpoint.save(run_dir / rundir.CHECKPOINT, _checkpoint_tree(state, 1, 0.0))
        out[system] = str(run_dir)
    return out


@pytest.fixture(scope="module")
def params(checkpoints):
    return {s: load_model_params(s, checkpoints[s]) for s in SYSTEMS}


def _obs(system, checkpoints, seed=0):
    env = gym.make(f"KeyCLD-{SYSTEMS[system]}-v0", checkpoint=checkpoints[system], bank_size=4)
    return env.reset(seed=seed)[0]


@pytest.mark.parametrize("system", SYSTEMS)
def test_return_gradient_matches_finite_differences(system, params, checkpoints):
    """d J / d actions of the whole planning objective (reward + dense + terminal) vs central FD."""
    cfg = MPCConfig(horizon=6, dense_weight=0.5, terminal_weight=0.3)
    obs = _obs(system, checkpoints)
    a_dim = params[system].model.num_actions
    actions = np.random.default_rng(0).uniform(-0.8, 0.8, (cfg.horizon, a_dim))
    with jax.enable_x64(True):  # float64 locally (the env's reward stays float32)
        p = params[system].replace(integrator="euler", substeps=1)
        p = p.replace(weights=jax.tree_util.tree_map(lambda w: jnp.asarray(w, jnp.float64), p.weights))
        state = F.state_from_vector(jnp.asarray(obs, jnp.float64))
        ref = jnp.asarray([0.1, 2.0], jnp.float64)

        def j(a):
            return plan_return(p, cfg, a, state, ref)[0]

        vg = jax.jit(jax.value_and_grad(j))  # one compilation serves the gradient and the FD values
        a = jnp.asarray(actions, jnp.float64)
        grad = np.asarray(vg(a)[1])
        eps = 1e-3
        fd = np.zeros_like(actions)
        for idx in np.ndindex(*actions.shape):
            e = np.zeros_like(actions)
            e[idx] = eps
            fd[idx] = (float(vg(a + e)[0]) - float(vg(a - e)[0])) / (2 * eps)
    assert np.all(np.isfinite(grad)) and np.linalg.norm(grad) > 0
    # the env's reward is float32 (F.reward), hence the absolute slack
    assert np.linalg.norm(grad - fd) <= 1e-2 * np.linalg.norm(grad) + 1e-3, (grad, fd)


@pytest.mark.parametrize("system,kind", [("pendulum", "grad"), ("cartpole", "cem")])
def test_prediction_equals_stepping_the_env(system, kind, params, checkpoints):
    """The planner's predicted trajectory is the learned env's for the plan, and its return the
    env's rewards plus the dense term (SMALL has no terminal term)."""
    agent = MPCAgent(params[system], kind, SMALL, seed=1)
    env = gym.make(f"KeyCLD-{SYSTEMS[system]}-v0", checkpoint=checkpoints[system], bank_size=4,
                   integrator=agent.params.integrator, substeps=agent.params.substeps).unwrapped
    obs, _ = env.reset(seed=2)
    plan = agent.plan(obs)
    env.reset(options={"state": obs})
    traj, ret = [], 0.0
    for a in plan:
        o, r, *_ = env.step(a)
        traj.append(o)
        d = len(o) // 2
        ret += r + SMALL.dense_weight * float(dense_progress(system, jnp.asarray(o[:d]), jnp.asarray(o[d:])))
    np.testing.assert_allclose(np.stack(traj), agent.last_prediction, rtol=1e-4, atol=1e-5)
    assert agent.last_return == pytest.approx(ret, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("system,kind,limit", [("cartpole", "grad", 1.0), ("pendulum", "cem", 1.0),
                                               ("cartpole", "grad", 0.3), ("cartpole", "cem", 0.3)])
def test_plans_stay_in_the_box(system, kind, limit, params, checkpoints):
    """Even with a huge step size / std, every planned action is finite and in the Box shrunk by
    ``action_limit``; with a smaller limit the plan reaches that limit (the huge steps saturate)."""
    wild = MPCConfig(**{**SMALL.__dict__, "learning_rate": 1e3, "init_std": 10.0, "init_noise": 10.0,
                        "terminal_weight": 1.0, "action_limit": limit})
    agent = MPCAgent(params[system], kind, wild, seed=0)
    assert np.all(np.isfinite(np.asarray(agent.energy_ref)))
    env = gym.make(f"KeyCLD-{SYSTEMS[system]}-v0", checkpoint=checkpoints[system], bank_size=4).unwrapped
    obs, info = env.reset(seed=0)
    agent.reset(env, obs, info)
    for _ in range(3):
        plan = agent.plan(obs)
        assert plan.shape == (wild.horizon, env.action_space.shape[0]) and plan.dtype == np.float32
        assert np.all(np.isfinite(plan)) and np.all(np.abs(plan) <= limit * (1 + 1e-6))
        if limit < 1.0:
            assert np.max(np.abs(plan)) > 0.9 * limit
        a = agent.act(obs, info)
        assert env.action_space.contains(a)
        obs, *_, info = env.step(a)
    assert agent.last_plan_time_ms > 0 and np.isfinite(agent.last_return)


@pytest.mark.parametrize("kind", ["grad", "cem"])
def test_same_seed_same_plan(kind, params, checkpoints):
    obs = _obs("cartpole", checkpoints, seed=1)

    def plans(seed):
        agent = MPCAgent(params["cartpole"], kind, SMALL, seed=seed)
        return np.stack([agent.plan(obs) for _ in range(3)])

    np.testing.assert_array_equal(plans(4), plans(4))
    assert not np.array_equal(plans(4), plans(5))
    # an episode replayed with its seed (agents.base.run_episode passes info["seed"]) plans the same
    agent = MPCAgent(params["cartpole"], kind, SMALL, seed=4)

    def episode(episode_seed):
        agent.reset(None, obs, {"seed": episode_seed})
        return np.stack([agent.plan(obs) for _ in range(2)])

    first = episode(7)
    assert not np.array_equal(episode(8), first)
    np.testing.assert_array_equal(episode(7), first)


@pytest.mark.parametrize("kind", ["grad", "cem"])
def test_underactuated_holds_pole_torque(kind, params, checkpoints):
    agent = MPCAgent(params["cartpole"], kind, SMALL, underactuated=True, seed=0)
    obs = _obs("cartpole", checkpoints, seed=3)
    for _ in range(3):
        plan = agent.plan(obs)
        assert np.all(plan[:, 1] == 0.0)
    assert agent.act(obs, {})[1] == 0.0


def test_bad_arguments_raise(params, checkpoints):
    with pytest.raises(ValueError, match="unknown planner kind 'mppi'"):
        make_mpc("pendulum", "mppi", checkpoints["pendulum"])
    with pytest.raises(ValueError, match="unknown environment 'cartwheel'"):
        make_mpc("cartwheel", "grad", checkpoints["pendulum"])
    with pytest.raises(ValueError, match="cartpole only"):
        make_mpc("pendulum", "cem", checkpoints["pendulum"], underactuated=True)
    with pytest.raises(ValueError, match="unknown planner settings"):
        make_mpc("pendulum", "grad", checkpoints["pendulum"], horizn=10)
    with pytest.raises(ValueError, match="is a 'cartpole' model"):
        make_mpc("pendulum", "grad", checkpoints["cartpole"])
    with pytest.raises(ValueError, match="horizon"):
        MPCConfig(horizon=0)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=f"action_limit must be in \\(0, 1\\], got {bad}"):
            MPCConfig(action_limit=bad)
    with pytest.raises(ValueError, match="elites"):
        MPCConfig(population=4, elites=5)
    with pytest.raises(ValueError, match="unknown planner kind"):
        MPCAgent(params["pendulum"], "random")
    with pytest.raises(ValueError, match="obs must be"):
        MPCAgent(params["pendulum"], "grad", SMALL).plan(np.zeros(3, np.float32))


def test_make_agent_builds_mpc(checkpoints):
    from agents.evaluate import make_agent
    wrapped = make_agent("mpc-cem", "cartpole", checkpoints["cartpole"], underactuated=True, seed=2, horizon=8)
    assert isinstance(wrapped.agent, MPCAgent) and wrapped.agent.underactuated and wrapped.agent.seed == 2
    agent = make_agent("mpc-grad", "pendulum", checkpoints["pendulum"], horizon=8)
    assert isinstance(agent, MPCAgent) and agent.config.horizon == 8 and agent.kind == "grad"


def test_dual_mode_hands_the_goal_to_the_lqr():
    """catch=True: at the upright pose the LQR acts (no planning); hanging, the planner plans."""
    import dataclasses

    from agents.energy_shaping import goal_keypoints
    from agents.mpc import DOWN_QPOS
    from keycld_gym.loading import pose_keypoints

    params = load_model_params("cartpole")  # the shipped model: the LQR needs a trained potential
    agent = MPCAgent(params, "grad", dataclasses.replace(SMALL, catch=True), underactuated=True)
    agent.reset(info={"seed": 0})
    goal = goal_keypoints("cartpole", params)
    a = agent.act(np.r_[goal, np.zeros_like(goal)].astype(np.float32))
    assert agent.last_mode == "catch" and agent.plan_times_ms == []
    assert np.all(np.abs(a) <= 1.0) and a[1] == 0.0
    down = pose_keypoints("cartpole", params, DOWN_QPOS["cartpole"])
    agent.reset(info={"seed": 1})  # a new episode: the observer restarts from the hanging pose
    a = agent.act(np.r_[down, np.zeros_like(down)].astype(np.float32))
    assert agent.last_mode == "plan" and len(agent.plan_times_ms) == 1
    assert np.all(np.abs(a) <= 1.0) and a[1] == 0.0


def test_terminal_energy_ignores_the_carts_own_motion(params):
    """The terminal term reads the energy in the cart's frame: a plan cannot score energy by
    racing the cart (every keypoint moving with it), only by swinging the pole; its target sits
    energy_margin·(E* − E_down) below E*."""
    p = params["cartpole"]
    x = jnp.asarray([0.1, -0.4, 0.3, 0.2], jnp.float32)  # cart and pole-tip keypoints
    rest = F.EnvState(x=x, xd=jnp.zeros(4), t=0)
    racing = rest.replace(xd=jnp.asarray([2.0, 0.0, 2.0, 0.0]))
    swinging = rest.replace(xd=jnp.asarray([0.0, 0.0, 1.0, -0.5]))
    e = {k: float(terminal_energy(p, s)) for k, s in (("rest", rest), ("racing", racing), ("swinging", swinging))}
    assert e["racing"] == pytest.approx(e["rest"], abs=1e-6)
    assert float(F.energy(racing, p)) > e["rest"] + 1e-3  # the total energy counts the cart's motion
    assert e["swinging"] > e["rest"] + 1e-3
    cfg = MPCConfig(horizon=4, terminal_weight=1.0)
    ref = np.asarray(MPCAgent(p, "grad", cfg).energy_ref)
    shifted = np.asarray(MPCAgent(p, "grad", MPCConfig(horizon=4, terminal_weight=1.0, energy_margin=0.25)).energy_ref)
    assert shifted[1] == pytest.approx(ref[1]) and shifted[0] == pytest.approx(ref[0] - 0.25 * ref[1], rel=1e-5)


def test_default_config_per_system_and_actuation():
    for kind in ("grad", "cem"):
        assert default_config(kind, "cartpole", underactuated=True) is UNDERACTUATED_DEFAULTS[(kind, "cartpole")]
        assert default_config(kind, "cartpole") is DEFAULTS[(kind, "cartpole")]
        assert default_config(kind, "pendulum", underactuated=True) is DEFAULTS[(kind, "pendulum")]
        assert default_config(kind, "cartpole", True).action_limit < 1.0
    with pytest.raises(ValueError, match="unknown planner kind 'mppi'"):
        default_config("mppi", "cartpole")
