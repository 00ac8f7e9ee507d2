"""``System``: what KeyCLD needs to know about a constrained mechanical system.

A system is described, not simulated: how many keypoints the model tracks, how many actuators
it has, the time between frames, the known holonomic constraints Φ(x) = 0 between the
keypoints, and optionally a reward for the learned environment. Data, training, evaluation,
export and the environments read this one object. The paper's pendulum, cartpole and acrobot
are built-in instances (:mod:`keycld.systems`); a user describes their own in a Python file::

    # my_system.py
    import jax.numpy as jnp
    from keycld import System

    def constraint(x):                     # x = [x1, y1, ..., xK, yK] in image units
        return jnp.array([x[1] - 0.8 * x[0] ** 2])

    SYSTEM = System(name="bead", num_keypoints=1, action_dim=1, dt=0.02,
                    constraint=constraint, action_scale=2.0)

and trains with ``keycld train --system my_system.py --data runs.npz``.

Coordinates: image units, [-1, 1] spans the 64×64 image, x to the right, y up.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import sys
from pathlib import Path
from typing import Callable

import numpy as np

Constraint = Callable  # x (2K,) -> Φ(x) (C,), pure JAX
Reward = Callable  # (x (2K,), ẋ (2K,), u (A,) in data units) -> scalar, pure JAX

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_ATTRIBUTE = "SYSTEM"


def _positive_int(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"System.{field} must be a positive integer, got {value!r}")


def _positive_float(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"System.{field} must be a finite number > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class System:
    """A constrained mechanical system seen by a camera, as KeyCLD models it.

    Attributes:
        name: identifier (letters, digits, ``_.-``; used in run and env names).
        num_keypoints: K, the keypoints (point masses) the model tracks.
        action_dim: A, the number of actuators (inputs of the learned B(x)).
        dt: seconds between consecutive frames (one control step).
        constraint: Φ, ``x (2K,) -> (C,)`` with C < 2K, pure JAX, in image units; the states
            the model may take are Φ(x) = 0 (up to a constant level the environments learn
            from the data). ``None``: no constraints. Its Jacobian comes from ``jax.jacfwd``.
        reward: ``reward(x (2K,), ẋ (2K,), u (A,)) -> scalar`` (pure JAX), the learned
            environment's reward; u in data units (``action_scale`` × the env's action).
            ``None``: reward 0.
        action_scale: the environments' actions in [-1, 1] are multiplied by this to give the
            data's action units.
        description: free text (shown in model cards).

    Construction validates every field and evaluates Φ and the reward once at a random point;
    each failure raises ``ValueError`` naming the field.
    """

    name: str
    num_keypoints: int
    action_dim: int
    dt: float
    constraint: Constraint | None
    reward: Reward | None = None
    action_scale: float = 1.0
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"System.name must be 1-64 characters of letters, digits, '_', '.', '-' "
                             f"starting with a letter or digit, got {self.name!r}")
        _positive_int("num_keypoints", self.num_keypoints)
        _positive_int("action_dim", self.action_dim)
        _positive_float("dt", self.dt)
        _positive_float("action_scale", self.action_scale)
        if not isinstance(self.description, str):
            raise ValueError(f"System.description must be a string, got {type(self.description).__name__}")
        object.__setattr__(self, "num_keypoints", int(self.num_keypoints))
        object.__setattr__(self, "action_dim", int(self.action_dim))
        object.__setattr__(self, "dt", float(self.dt))
        object.__setattr__(self, "action_scale", float(self.action_scale))
        # C, from the one validating call of Φ (0 without constraints); not a dataclass field
        object.__setattr__(self, "_num_constraints", self._check_constraint())
        self._check_reward()

    # ---- validation ---------------------------------------------------------------------
    def _random_point(self, n: int, seed: int) -> "jax.Array":  # noqa: F821
        import jax.numpy as jnp

        return jnp.asarray(np.random.RandomState(seed).uniform(-0.5, 0.5, n), jnp.float32)

    def _evaluate(self, field: str, signature: str, inputs: str, *args) -> np.ndarray:
        """``getattr(self, field)(*args)`` as an array; ValueError naming the field when it is
        not a function or raises (the user's function: whatever it raised is reported)."""
        fn = getattr(self, field)
        if not callable(fn):
            raise ValueError(f"System.{field} must be a function {signature} or None, got {type(fn).__name__}")
        try:
            return np.asarray(fn(*args))
        except Exception as err:
            raise ValueError(f"System.{field} failed on {inputs}: {type(err).__name__}: {err}") from None

    def _check_constraint(self) -> int:
        """Validate Φ; the number of constraint equations C."""
        if self.constraint is None:
            return 0
        d = 2 * self.num_keypoints
        value = self._evaluate("constraint", "x -> Φ(x)", f"a ({d},) keypoint vector", self._random_point(d, 0))
        if value.ndim != 1:
            raise ValueError(f"System.constraint must return a 1-D array (C,), got shape {value.shape}")
        if not 0 < value.shape[0] < d:
            raise ValueError(f"System.constraint must return 0 < C < 2K = {d} values, got {value.shape[0]}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"System.constraint is not finite at a random point: {value.tolist()}")
        return int(value.shape[0])

    def _check_reward(self) -> None:
        if self.reward is None:
            return
        d, a = 2 * self.num_keypoints, self.action_dim
        value = self._evaluate("reward", "(x, xd, u) -> scalar", f"x, xd ({d},) and u ({a},)",
                               self._random_point(d, 1), self._random_point(d, 2), self._random_point(a, 3))
        if value.shape != ():
            raise ValueError(f"System.reward must return a scalar, got shape {value.shape}")
        if not np.isfinite(value):
            raise ValueError(f"System.reward is not finite at a random point: {value}")

    # ---- derived facts --------------------------------------------------------------------
    @property
    def state_dim(self) -> int:
        """2K: the length of x (and of ẋ)."""
        return 2 * self.num_keypoints

    @property
    def constrained(self) -> bool:
        return self.constraint is not None

    @property
    def num_constraints(self) -> int:
        """C, the number of constraint equations (0 without constraints)."""
        return self._num_constraints


def load_system_file(reference: str | Path) -> tuple[System, Path, str]:
    """Load a System from ``FILE.py`` (attribute ``SYSTEM``) or ``FILE.py:NAME``.

    Returns:
        (system, resolved file path, attribute name).
    Raises:
        ValueError naming the file and what is wrong with it.
    """
    text = str(reference)
    path_text, sep, attr = text.rpartition(":")
    if not sep or not path_text.endswith(".py"):  # no ":NAME" (or a ':' inside the path)
        path_text, attr = text, DEFAULT_ATTRIBUTE
    path = Path(path_text)
    if path.suffix != ".py":
        raise ValueError(f"system file {text!r} must be a .py file, optionally followed by :NAME")
    if not path.is_file():
        raise ValueError(f"system file {str(path)!r} does not exist")
    if not attr.isidentifier():
        raise ValueError(f"system attribute {attr!r} in {text!r} is not a Python identifier")
    module_name = f"keycld_user_system_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling-free introspection need it
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(module_name, None)
        raise ValueError(f"system file {str(path)!r} failed to run: {type(err).__name__}: {err}") from err
    if not hasattr(module, attr):
        raise ValueError(f"system file {str(path)!r} defines no {attr!r}"
                         + (" (define SYSTEM = System(...) or name it with FILE.py:NAME)"
                            if attr == DEFAULT_ATTRIBUTE else ""))
    system = getattr(module, attr)
    if not isinstance(system, System):
        raise ValueError(f"{attr} in {str(path)!r} is a {type(system).__name__}, not a keycld.System")
    return system, path.resolve(), attr


__all__ = ["System", "load_system_file", "Constraint", "Reward"]
