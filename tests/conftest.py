import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One dataset cache shared by the tests of a worker."""
    path = tmp_path_factory.mktemp("keycld-cache")
    return path


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A cache holding the tiny pendulum dataset (5 runs × 8 frames, control yes)."""
    from keycld.data import DatasetConfig, load_dataset

    cache = tmp_path_factory.mktemp("tiny-cache")
    load_dataset(DatasetConfig("pendulum", "random", "yes", 5, 8), cache_dir=cache, workers=1, progress=False)
    return cache


def kill_training_at_step(monkeypatch, step_number: int):
    """Make ``keycld.train`` raise KeyboardInterrupt (a kill) before its training step number
    ``step_number`` (0-based); returns the real ``make_train_step`` to restore afterwards."""
    import keycld.train as T

    real = T.make_train_step

    def killing_make_train_step(c, m, background=None):
        inner = real(c, m, background)

        def step(state, frames, actions):
            if int(state.step) == step_number:
                raise KeyboardInterrupt
            return inner(state, frames, actions)
        return step

    monkeypatch.setattr(T, "make_train_step", killing_make_train_step)
    return real


def _train_tiny_model(root, system: str) -> str:
    """Train a tiny KeyCLD model (h = 8, 3 runs × 6 frames, two steps) under ``root``; its run dir."""
    from keycld.config import TrainConfig
    from keycld.data import DatasetConfig, load_dataset
    from keycld.train import train

    load_dataset(DatasetConfig(system, "random", "yes", 3, 6), cache_dir=root / "cache", workers=1,
                 progress=False)
    cfg = TrainConfig(environment=system, num_runs=3, num_frames=6, num_hidden_dim=8,
                      num_predicted_steps=2, num_epochs=1, max_steps_per_epoch=2)
    train(cfg, root / system, cache_dir=root / "cache", progress=False, validate=False, gif=False)
    return str(root / system)


@pytest.fixture(scope="session")
def train_tiny_model():
    """``train_tiny_model(root, system) -> run dir``: the tiny models the env tests share."""
    return _train_tiny_model
