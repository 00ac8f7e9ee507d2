"""The gymnax and Gymnasium FuncEnv adapters against the functional core they wrap: the same
rollouts (same keys, same bank states), gymnax's same-step auto-reset, jit and vmap, the spaces
and the errors."""
from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from keycld_gym import functional as F
from keycld_gym.funcenv import KeyCLDFuncEnv, load_core_params
from keycld_gym.vector import vector_step

TOL = dict(rtol=1e-5, atol=1e-6)  # float32: a jitted and an eager evaluation of the same step
N_STEPS = 6
_step = jax.jit(F.step)
_reset = jax.jit(F.reset)


@pytest.fixture(scope="module")
def core(tmp_path_factory, train_tiny_model) -> F.EnvParams:
    """Core params of a tiny cartpole model (A = 2, non-zero rewards), a bank of 4 states, one
    Euler substep per step (the adapters pass the integrator settings through; this one compiles
    fastest)."""
    run = train_tiny_model(tmp_path_factory.mktemp("adapters"), "cartpole")
    return load_core_params(run, integrator="euler", substeps=1, bank_size=4)


@pytest.fixture(scope="module")
def gx():
    """keycld_gym.gymnax, or a skip when gymnax itself does not import."""
    try:
        import gymnax.environments.environment  # noqa: F401
    except ImportError as err:
        pytest.skip(f"gymnax cannot be imported ({err}); install it with `pip install keycld-gym[gymnax]`")
    import keycld_gym.gymnax as gx
    return gx


def _gymnax_env(gx, core, max_steps):
    core = core.replace(max_steps=max_steps)
    params = gx.GymnaxParams(core, max_steps)
    return gx.environment_class()(params), params


def _actions(core, n=N_STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(-1, 1, (n, core.model.system.action_dim)), jnp.float32)


def _core_rollout(core, state, actions):
    out = []
    for a in actions:
        state, obs, rew, trunc, info = _step(state, a, core)
        out.append((state, obs, rew, trunc, info))
    return out


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def test_gymnax_rollout_equals_core_rollout(gx, core):
    env, params = _gymnax_env(gx, core, 1000)
    key = jax.random.PRNGKey(3)
    obs, state = env.reset(key, params)
    start = _reset(key, core)
    np.testing.assert_array_equal(np.asarray(obs), np.asarray(F.observe(start)))
    actions = _actions(core)
    expected = _core_rollout(core, start, actions)
    for i, (a, (s_c, o_c, r_c, tr_c, info_c)) in enumerate(zip(actions, expected)):
        obs, state, rew, term, trunc, info = env.step(jax.random.PRNGKey(100 + i), state, a, params)
        _close(obs, o_c)
        _close(state.x, s_c.x)
        _close(state.xd, s_c.xd)
        assert int(state.t) == int(s_c.t) == i + 1
        _close(rew, r_c)
        assert not bool(term) and not bool(trunc) and not bool(tr_c)
        _close(info["energy"], info_c["energy"])
        _close(info["constraint_residual"], info_c["constraint_residual"])
        assert bool(info["saturated"]) == bool(info_c["saturated"])
    assert np.any(np.asarray([r for _, _, r, _, _ in expected]) != 0)  # the rewards compared are not all 0


def test_gymnax_auto_reset_is_vector_step_same_step(gx, core):
    """With a one-state bank every reset lands on the same state, so gymnax's step and
    vector_step's same-step mode (N = 1) must agree on every output, resets included."""
    max_steps = 3
    one = core.replace(bank=core.bank[:1], max_steps=max_steps)
    env, params = _gymnax_env(gx, one, max_steps)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    states = jax.tree_util.tree_map(lambda v: v[None], state)
    done = jnp.zeros(1, bool)
    truncations = []
    for i, a in enumerate(_actions(core, 2 * max_steps + 1)):
        key = jax.random.PRNGKey(i)
        obs, state, rew, term, trunc, info = env.step(key, state, a, params)
        states, v_obs, v_rew, v_trunc, v_info = vector_step(states, a[None], done, key, one, mode="same_step")
        done = v_trunc
        _close(obs, v_obs[0])
        _close(state.x, states.x[0])
        assert int(state.t) == int(states.t[0])
        _close(rew, v_rew[0])
        assert bool(trunc) == bool(v_trunc[0]) and not bool(term)
        _close(info["final_observation"], v_info["final_obs"][0])
        truncations.append(bool(trunc))
        if trunc:  # the truncating step already returns the reset state
            np.testing.assert_array_equal(np.asarray(obs), np.asarray(one.bank[0]))
            assert int(state.t) == 0
    assert truncations == [False, False, True] * 2 + [False]


def test_gymnax_reset_draws_with_the_second_half_of_the_step_key(gx, core):
    env, params = _gymnax_env(gx, core, 1)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    drawn = set()
    for i in range(8):
        key = jax.random.PRNGKey(50 + i)
        obs, state, _, _, trunc, info = env.step(key, state, _actions(core, 1)[0], params)
        assert bool(trunc)
        expected = _reset(jax.random.split(key)[1], core)
        np.testing.assert_array_equal(np.asarray(obs), np.asarray(F.observe(expected)))
        drawn.add(tuple(np.asarray(obs).tolist()))
    assert len(drawn) > 1  # the keys choose among the bank's 4 states


def test_gymnax_step_jits_and_vmaps(gx, core):
    env, params = _gymnax_env(gx, core, 2)
    n = 3
    keys = jax.random.split(jax.random.PRNGKey(7), n)
    obs, states = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    assert obs.shape == (n, 2 * core.dim)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    singles = [jax.tree_util.tree_map(lambda v, i=i: v[i], states) for i in range(n)]
    actions = np.random.default_rng(1).uniform(-1, 1, (4, n, core.model.system.action_dim)).astype(np.float32)
    for t, a in enumerate(actions):
        step_keys = jax.random.split(jax.random.PRNGKey(20 + t), n)
        obs, states, rew, _, trunc, _ = step(step_keys, states, jnp.asarray(a), params)
        assert obs.shape == (n, 2 * core.dim) and rew.shape == (n,) and trunc.shape == (n,)
        for i in range(n):
            o, singles[i], r, _, tr, _ = env.step(step_keys[i], singles[i], jnp.asarray(a[i]), params)
            _close(obs[i], o)
            _close(rew[i], r)
            assert bool(trunc[i]) == bool(tr)
    assert np.asarray(states.t).tolist() == [0] * n  # the fourth step truncated (max 2) and reset


def test_gymnax_transition_gradients_are_the_cores(gx, core):
    """Detached by default (gymnax's convention); ``with_transition_gradients()`` gives the
    gradient of the core's step."""
    env, params = _gymnax_env(gx, core, 1000)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    a0 = _actions(core, 1)[0]
    key = jax.random.PRNGKey(1)
    core_grad = jax.jit(jax.grad(lambda a: F.step(state, a, core)[1].sum()))(a0)
    grad = jax.jit(jax.grad(lambda a: env.with_transition_gradients().step(key, state, a, params)[0].sum()))(a0)
    detached = jax.jit(jax.grad(lambda a: env.step(key, state, a, params)[0].sum()))(a0)
    assert np.any(np.asarray(core_grad) != 0)
    _close(grad, core_grad)
    np.testing.assert_array_equal(np.asarray(detached), 0.0)


def test_gymnax_spaces_name_and_render(gx, core):
    env, params = _gymnax_env(gx, core, 5)
    a_dim, o_dim = core.model.system.action_dim, 2 * core.dim
    assert env.num_actions == a_dim
    assert env.name == "KeyCLD-cartpole"
    space = env.action_space(params)
    assert space.shape == (a_dim,) and float(np.min(space.low)) == -1.0 and float(np.max(space.high)) == 1.0
    sample = space.sample(jax.random.PRNGKey(0))
    assert sample.shape == (a_dim,) and bool(space.contains(sample))
    obs, state = env.reset(jax.random.PRNGKey(1), params)
    assert env.observation_space(params).shape == (o_dim,)
    assert bool(env.observation_space(params).contains(obs))
    assert not bool(env.observation_space(params).contains(obs + 2 * core.velocity_limit))
    assert bool(env.state_space(params).contains(state))
    np.testing.assert_array_equal(np.asarray(env.render(state, params)), np.asarray(F.render(state, core)))


def test_gymnax_bad_arguments(gx, core):
    env, params = _gymnax_env(gx, core, 5)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    a_dim = core.model.system.action_dim
    with pytest.raises(ValueError, match=rf"action has shape \({a_dim + 1},\); expected \({a_dim},\)"):
        env.step(jax.random.PRNGKey(0), state, jnp.zeros(a_dim + 1), params)
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1, got 0"):
        gx.make("pendulum", max_steps=0)
    with pytest.raises(ValueError, match="'no-such-system' is neither a built-in system.*'pendulum'"):
        gx.make("no-such-system")


def test_loading_names_the_bad_system_or_directory(tmp_path):
    with pytest.raises(ValueError, match="'no-such-system' is neither a built-in system.*'pendulum'.*'acrobot'"):
        KeyCLDFuncEnv.load("no-such-system")
    with pytest.raises(ValueError, match=f"'{tmp_path}' is neither a built-in system"):
        load_core_params(tmp_path)  # an existing directory that holds no model
    with pytest.raises(ValueError, match="must be a built-in system name .* or a directory path, got 3"):
        load_core_params(3)
    with pytest.raises(ValueError, match="must be a keycld_gym.functional.EnvParams, got str"):
        KeyCLDFuncEnv("pendulum")


def test_gymnax_make_loads_a_shipped_model_by_name(gx):
    env, params = gx.make("pendulum", max_steps=7)
    assert params.core.model.system.name == "pendulum" and params.max_steps_in_episode == 7
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    _, _, _, _, trunc, _ = env.step(jax.random.PRNGKey(1), state, jnp.zeros(env.num_actions), params)
    assert obs.shape == (2 * params.core.dim,) and not bool(trunc)


def test_make_without_gymnax_names_the_extra(monkeypatch):
    import keycld_gym.gymnax as gx

    for name in ("gymnax", "gymnax.environments", "gymnax.environments.environment", "gymnax.environments.spaces"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    with pytest.raises(ImportError, match=r"pip install keycld-gym\[gymnax\]"):
        gx.make("pendulum")


def test_importing_keycld_gym_does_not_import_gymnax():
    code = ("import sys, keycld_gym, keycld_gym.gymnax, keycld_gym.funcenv\n"
            "print('gymnax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_funcenv_rollout_equals_core_rollout(core):
    env = KeyCLDFuncEnv(core)
    key = jax.random.PRNGKey(5)
    state = env.initial(key)
    np.testing.assert_array_equal(np.asarray(state), np.asarray(F.observe(_reset(key, core))))
    actions = _actions(core, seed=2)
    for a, (s_c, o_c, r_c, _, info_c) in zip(actions, _core_rollout(core, _reset(key, core), actions)):
        nxt = env.transition(state, a, key)
        _close(env.observation(nxt, key), o_c)
        _close(env.reward(state, a, nxt, key), r_c)
        assert not bool(env.terminal(nxt, key))
        info = env.transition_info(state, a, nxt)
        _close(info["energy"], info_c["energy"])
        _close(info["constraint_residual"], info_c["constraint_residual"])
        state = nxt
    assert env.observation_space.contains(np.asarray(state))
    assert env.action_space.shape == (core.model.system.action_dim,)


def test_functional_jax_env_equals_core_rollout(core):
    from gymnasium.envs.functional_jax_env import FunctionalJaxEnv

    env = FunctionalJaxEnv(KeyCLDFuncEnv(core), render_mode="rgb_array")
    obs, _ = env.reset(seed=11)
    start = _reset(jax.random.split(jax.random.PRNGKey(11))[0], core)
    np.testing.assert_array_equal(np.asarray(obs), np.asarray(F.observe(start)))
    actions = _actions(core, seed=3)
    for a, (s_c, o_c, r_c, _, _) in zip(actions, _core_rollout(core, start, actions)):
        obs, rew, term, trunc, info = env.step(np.asarray(a))
        _close(obs, o_c)
        _close(rew, r_c)
        assert term is False and trunc is False and set(info) == {"energy", "constraint_residual"}
    # The env renders its own state (close to, not bit-equal to, the eager core rollout's s_c)
    # through the jitted core render: equal to the eager render of that state up to uint8 rounding.
    frame = np.asarray(env.render()).astype(int)
    expected = np.asarray(F.render(F.state_from_vector(env.state), core)).astype(int)
    assert frame.shape == expected.shape == (64, 64, 3)
    assert np.abs(frame - expected).max() <= 1 and np.mean(frame != expected) < 1e-3
    bad = np.full(core.model.system.action_dim, 1.5, np.float32)
    with pytest.raises(ValueError, match=r"outside the action space \[-1, 1\]"):
        env.step(bad)
    with pytest.raises(ValueError, match="action has shape"):
        env.step(np.zeros(core.model.system.action_dim + 1, np.float32))


def test_functional_jax_vector_env_steps_resets_and_renders(core):
    from gymnasium.envs.functional_jax_env import FunctionalJaxVectorEnv

    n, limit = 2, 2
    env = FunctionalJaxVectorEnv(KeyCLDFuncEnv(core), num_envs=n, max_episode_steps=limit, render_mode="rgb_array")
    obs, _ = env.reset(seed=4)
    keys = jax.random.split(jax.random.split(jax.random.PRNGKey(4))[0], n)
    states = jax.vmap(F.reset, in_axes=(0, None))(keys, core)
    np.testing.assert_array_equal(np.asarray(obs), np.asarray(jax.vmap(F.observe)(states)))
    actions = np.random.default_rng(4).uniform(-1, 1, (limit, n, core.model.system.action_dim)).astype(np.float32)
    for t, a in enumerate(actions):
        states, o_c, r_c, _, info_c = jax.vmap(_step, in_axes=(0, 0, None))(states, jnp.asarray(a), core)
        obs, rew, term, trunc, info = env.step(jnp.asarray(a))
        _close(obs, o_c)
        _close(rew, r_c)
        _close(info["constraint_residual"], info_c["constraint_residual"])
        assert np.asarray(term).tolist() == [False] * n
        assert np.asarray(trunc).tolist() == [t + 1 == limit] * n
    assert env.render().shape == (n, 64, 64, 3)
    obs, _, _, trunc, _ = env.step(jnp.asarray(actions[0]))  # next-step auto-reset to bank states
    bank = np.asarray(core.bank)
    for row in np.asarray(obs):
        assert np.any(np.all(bank == row, axis=1)), f"{row} is not a bank state"
    assert np.asarray(trunc).tolist() == [False] * n
