"""The functional core's fast paths equal the plain implementations to float32 rounding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from keycld.model import constraints as C
from keycld_gym import functional as F
from keycld_gym.loading import load_env_params


def _lu_solve(g, b):
    return jnp.linalg.solve(g + C.GRAM_EPS * jnp.eye(g.shape[0], dtype=g.dtype), b)


@pytest.mark.parametrize("c", [1, 2, 3])
def test_gram_solve_equals_lu(c):
    rng = np.random.default_rng(c)
    for _ in range(50):
        d = rng.normal(size=(c, 4)).astype(np.float32)
        b = rng.normal(size=c).astype(np.float32)
        np.testing.assert_allclose(C.gram_solve(jnp.asarray(d @ d.T), jnp.asarray(b)),
                                   _lu_solve(jnp.asarray(d @ d.T), jnp.asarray(b)), rtol=2e-4, atol=1e-5)


def test_gram_solve_stays_finite_when_singular():
    d = jnp.array([[1.0, 2.0, 0.0, 0.0], [2.0, 4.0, 0.0, 0.0]])  # parallel rows: G singular
    assert np.all(np.isfinite(C.gram_solve(d @ d.T, jnp.array([1.0, 2.0]))))
    zero = jnp.zeros((2, 4))  # coinciding keypoints: a zero row
    assert np.all(np.isfinite(C.gram_solve(zero @ zero.T, jnp.array([1.0, 0.0]))))


@pytest.mark.parametrize("system", ["pendulum", "cartpole", "acrobot"])
def test_step_matches_the_lu_implementation_on_1000_states(system, monkeypatch):
    params, _ = load_env_params(system, bank_size=16)
    rng = np.random.default_rng(0)
    bank = np.asarray(params.bank)
    vecs = bank[rng.integers(0, len(bank), 1000)]
    d = params.dim
    vecs[:, :d] += rng.normal(0, 0.05, (1000, d))
    vecs[:, d:] += rng.normal(0, 1.0, (1000, d))
    states = jax.vmap(lambda v: F.snap_to_manifold(F.state_from_vector(v), params))(jnp.asarray(vecs, jnp.float32))
    actions = jnp.asarray(rng.uniform(-1, 1, (1000, params.model.system.action_dim)), jnp.float32)

    def run():
        return jax.jit(jax.vmap(F.step, in_axes=(0, 0, None)))(states, actions, params)

    fast = run()
    monkeypatch.setattr(C, "gram_solve", _lu_solve)
    plain = run()
    np.testing.assert_allclose(fast[1], plain[1], rtol=1e-4, atol=2e-4)  # observations
    np.testing.assert_allclose(fast[2], plain[2], rtol=1e-4, atol=1e-4)  # rewards


def test_substeps_chosen_by_measured_accuracy():
    params, _ = load_env_params("pendulum", bank_size=8)
    chosen, errors = F.choose_substeps(params, num=8, horizon=10)
    assert errors[chosen] <= F.SUBSTEP_TOL and all(errors[s] > F.SUBSTEP_TOL for s in errors if s < chosen)
    # an impossible tolerance falls back to the largest candidate, having measured every one
    chosen, errors = F.choose_substeps(params, tol=-1.0, candidates=(1, 2), num=8, horizon=10)
    assert chosen == 2 and set(errors) == {1, 2}
    # the criterion can fail: a coarse Euler step is far from the RK4 reference
    assert F.integration_error(params.replace(integrator="euler"), 1, num=8, horizon=10) > F.SUBSTEP_TOL
