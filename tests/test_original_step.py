"""benchmarks/original_step.py: it times the step of the checkout given by --src (not of our own
package, which has the same name), and it refuses bad arguments before any work.

The paper's code is not available here, so a stand-in checkout with the same interface
(``keycld.models.KeyCLD``, ``keycld.losses.loss_fn_step``, ``keycld.util.reduce_mean``,
``keycld.constraints.<env>_constraint_fn``) plays it: a tiny differentiable loss.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "original_step.py"

STAND_IN = {
    "keycld/__init__.py": "",
    "keycld/constraints.py": (
        "import jax.numpy as jnp\n"
        "def pendulum_constraint_fn(state):\n"
        "    return jnp.array([jnp.sqrt(state[0] ** 2 + state[1] ** 2) - 0.5])\n"),
    "keycld/models.py": (
        "import jax, jax.numpy as jnp\n"
        "class KeyCLD:\n"
        "    def __init__(self, num_keypoints, num_action_dim, num_hidden_dim, static, constraint_fn):\n"
        "        self.num_hidden_dim = num_hidden_dim\n"
        "    def init(self, key):\n"
        "        return {'encoder': {'w': jnp.ones(self.num_hidden_dim)}, 'mass_matrix': {'m': jnp.ones(1)}}\n"),
    "keycld/losses.py": (
        "import jax.numpy as jnp\n"
        "def loss_fn_step(dw, bw, steps, solver, model, params, item, perm):\n"
        "    assert item['x'].shape == (50, 64, 64, 3) and perm.shape == (50,) and solver == 'euler'\n"
        "    loss = (params['encoder']['w'].sum() * item['x'].mean()) ** 2 + params['mass_matrix']['m'].sum()\n"
        "    return loss, {'reconstruction': loss}\n"),
    "keycld/util.py": (
        "import jax, jax.numpy as jnp\n"
        "def reduce_mean(fn, axis=0):\n"
        "    return lambda *a: jax.tree_map(lambda x: jnp.mean(x, axis=axis), fn(*a))\n"),
}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("original")
    for rel, text in STAND_IN.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd="/",
                          timeout=300)


def test_times_the_checkout_given_not_our_package(stand_in):
    res = run("--src", str(stand_in), "--cases", '[["pendulum", 8]]', "--repeats", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    (line,) = [l for l in res.stdout.splitlines() if l.startswith("RESULT ")]
    (out,) = json.loads(line[len("RESULT "):])
    assert (out["environment"], out["hidden"]) == ("pendulum", 8)
    assert len(out["times_s"]) == 2 and out["step_s"] > 0 and out["update_s"] > 0


@pytest.mark.parametrize("args, message", [
    (["--cases", '[["pendulum", 12]]'], "multiple of 8"),
    (["--cases", '[["walker", 16]]'], "'walker'"),
    (["--cases", '[["pendulum", 16]'], "not JSON"),
    (["--cases", '[]'], "non-empty JSON list"),
    (["--cases", '{"pendulum": 16}'], "non-empty JSON list"),
    (["--repeats", "0"], "--repeats"),
])
def test_bad_arguments_exit_2_before_any_work(stand_in, args, message):
    res = run("--src", str(stand_in), *args)
    assert res.returncode == 2
    assert message in res.stderr and "RESULT" not in res.stdout


def test_a_directory_without_the_original_code_is_refused(tmp_path):
    res = run("--src", str(tmp_path))
    assert res.returncode == 2
    assert "github.com/rdaems/keycld" in res.stderr
