import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One dataset cache shared by the tests of a worker."""
    path = tmp_path_factory.mktemp("keycld-cache")
    return path
