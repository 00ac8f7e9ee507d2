"""Dataset protocol, determinism, caching and input validation (≤ 10 runs × ≤ 10 frames)."""
import json
import multiprocessing
import subprocess
import sys

import numpy as np
import pytest

from keycld.data import (CacheError, DatasetConfig, generate, generate_run, load_dataset, read_cache,
                         vpt_epsilon)


def test_same_seed_same_frames_and_fresh_env_equal():
    a = generate_run("cartpole", "random", "yes", 7, 6)
    b = generate_run("cartpole", "random", "yes", 7, 6, fresh_env=True)  # the paper's way
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = generate_run("cartpole", "random", "yes", 8, 6)
    assert not np.array_equal(a["frames"], c["frames"])


@pytest.mark.parametrize("environment,control", [("pendulum", "yes"), ("cartpole", "underactuated"),
                                                 ("acrobot", "yes"), ("acrobot", "no")])
def test_action_and_initial_state_protocol(environment, control):
    from keycld.tasks import TASK_SPECS
    spec = TASK_SPECS[environment]
    for seed in range(10):
        run = generate_run(environment, "random", control, seed, 3)
        rs = np.random.RandomState(seed)
        expected = rs.uniform(-2, 2, spec.num_actions)
        if control == "no":
            expected[:] = 0
        elif rs.rand() < 0.2:
            expected[:] = 0
        if control == "underactuated":
            expected[1] = 0
        np.testing.assert_array_equal(run["action"], expected)
        np.testing.assert_allclose(run["time"], spec.dt * np.arange(1, 4))
        assert run["frames"].shape == (3, 64, 64, 3)


def test_zeroing_happens_for_some_seeds():
    zeroed = [s for s in range(30) if not np.any(generate_run("pendulum", "random", "yes", s, 1)["action"])]
    rs_zero = [s for s in range(30) if (lambda r: (r.uniform(-2, 2, 1), r.rand())[1] < 0.2)(np.random.RandomState(s))]
    assert zeroed == rs_zero and 0 < len(zeroed) < 30


def test_random_init_follows_rest_mode_differs():
    rand = generate_run("pendulum", "random", "no", 3, 1)
    rest = generate_run("pendulum", "rest", "no", 3, 1)
    rs = np.random.RandomState(3)
    rs.uniform(-2, 2, 1)
    rs.uniform(-np.pi, np.pi)  # the task's own initial angle, drawn in reset()
    q0, v0 = rs.uniform(-np.pi, np.pi, 1), rs.uniform(-0.1, 0.1, 1)
    # one 0.02 s step after the written initial state
    assert abs(rand["qpos"][0, 0] - q0[0]) < 0.05
    assert abs(rand["qvel"][0, 0] - v0[0]) < 0.5
    assert not np.array_equal(rand["qpos"], rest["qpos"])


def test_split_sizes():
    assert DatasetConfig("pendulum", num_runs=500).num_val == 50
    assert DatasetConfig("pendulum", num_runs=10).num_val == 1


def test_parallel_equals_serial():
    cfg = DatasetConfig("acrobot", "random", "underactuated", num_runs=4, num_frames=4)
    a = generate(cfg, workers=1, progress=False)
    b = generate(cfg, workers=2, progress=False)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_cache_roundtrip_and_corruption(tmp_path):
    cfg = DatasetConfig("pendulum", "random", "yes", num_runs=3, num_frames=4)
    ds = load_dataset(cfg, cache_dir=tmp_path, workers=1, progress=False)
    assert ds.frames.dtype == np.uint8 and ds.frames.shape == (3, 4, 64, 64, 3)
    assert len(ds.split("train")) == 2 and len(ds.split("val")) == 1
    assert ds.grid_frames.shape == (16, 16, 64, 64, 3)
    assert ds.epsilon == pytest.approx(vpt_epsilon(ds.frames[:2]))
    f = ds.float_frames(ds.frames[:1])
    assert f.dtype == np.float32 and 0 <= f.min() and f.max() <= 1
    directory = tmp_path / cfg.name
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["config"] == cfg.to_dict() and len(manifest["sha256"]) == 64
    # truncate the npz: detected, reported with its path, regenerated, identical content
    npz = directory / "data.npz"
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=str(npz).replace(".", r"\.")):
        again = load_dataset(cfg, cache_dir=tmp_path, workers=1, progress=False)
    np.testing.assert_array_equal(again.frames, ds.frames)
    read_cache(directory, cfg)  # valid again
    # a flipped byte in the middle: hash mismatch
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="hash mismatch"):
        load_dataset(cfg, cache_dir=tmp_path, workers=1, progress=False)
    # no stray temporary files
    assert sorted(p.name for p in directory.iterdir()) == ["data.npz", "manifest.json"]


@pytest.mark.parametrize("recorded", [dict(dm_control="0.0.1", mujoco="0.0.2"),  # other renderer
                                      dict(dm_control=None, mujoco=None)])  # written before versions were recorded
def test_cache_rendered_with_other_versions_is_regenerated(tmp_path, recorded):
    from keycld.data import renderer_versions

    cfg = DatasetConfig("pendulum", "random", "no", num_runs=2, num_frames=3)
    ds = load_dataset(cfg, cache_dir=tmp_path, workers=1, progress=False)
    man = tmp_path / cfg.name / "manifest.json"
    installed = renderer_versions()
    manifest = json.loads(man.read_text())
    assert {k: manifest[k] for k in installed} == installed
    for name, version in recorded.items():
        if version is None:
            del manifest[name]
        else:
            manifest[name] = version
    man.write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="installed are"):
        read_cache(tmp_path / cfg.name, cfg)
    shown = [f"{k} {v or '(not recorded)'}" for k, v in recorded.items()]
    shown += [f"{k} {v}" for k, v in installed.items()]
    with pytest.warns(UserWarning) as caught:
        again = load_dataset(cfg, cache_dir=tmp_path, workers=1, progress=False)
    message = " ".join(str(w.message) for w in caught)
    assert all(s in message for s in shown), message
    manifest = json.loads(man.read_text())
    assert {k: manifest[k] for k in installed} == installed
    np.testing.assert_array_equal(again.frames, ds.frames)
    read_cache(tmp_path / cfg.name, cfg)


def test_lock_serialises_writers(tmp_path, monkeypatch):
    """A second writer that misses the cache waits for the lock holder and then reads its entry
    instead of generating its own."""
    import threading
    import time

    import keycld.data as data
    from keycld.fileio import locked

    cfg = DatasetConfig("pendulum", "random", "no", num_runs=2, num_frames=3)
    arrays = generate(cfg, workers=1, progress=False)
    generated, result, errors = [], [], []
    missed, go = threading.Event(), threading.Event()
    real_read = data.read_cache

    def read_then_pause(directory, c):
        try:
            return real_read(directory, c)
        except CacheError:
            if not missed.is_set():
                missed.set()
                go.wait(30)
            raise

    monkeypatch.setattr(data, "read_cache", read_then_pause)
    monkeypatch.setattr(data, "generate", lambda *a, **k: generated.append(1) or arrays)

    def second_writer():
        try:
            result.append(load_dataset(cfg, cache_dir=tmp_path, workers=1, progress=False))
        except Exception as err:  # reported by the assertion below
            errors.append(err)

    thread = threading.Thread(target=second_writer)
    with locked(data._lock_file(tmp_path, cfg)):
        thread.start()
        assert missed.wait(30)
        go.set()
        time.sleep(0.5)
        assert thread.is_alive(), "the second writer did not wait for the lock"
        data.write_cache(tmp_path / cfg.name, cfg, arrays)
    thread.join(30)
    assert not errors and not generated
    np.testing.assert_array_equal(result[0].frames, arrays["frames"])


def _load_in_child(args):
    cache, cfg = args
    ds = load_dataset(DatasetConfig(**cfg), cache_dir=cache, workers=1, progress=False)
    return ds.frames.sum()


def test_concurrent_generation_leaves_one_valid_cache(tmp_path):
    cfg = DatasetConfig("pendulum", "random", "no", num_runs=2, num_frames=3)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        sums = pool.map(_load_in_child, [(str(tmp_path), cfg.to_dict())] * 2)
    assert sums[0] == sums[1]
    read_cache(tmp_path / cfg.name, cfg)
    assert sorted(p.name for p in (tmp_path / cfg.name).iterdir()) == ["data.npz", "manifest.json"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(environment="walker"), "unknown environment 'walker'; allowed: pendulum, cartpole, acrobot"),
    (dict(environment="pendulum", control="underactuated"), "'underactuated' needs two actuators"),
    (dict(environment="pendulum", init_mode="upright"), "unknown init_mode 'upright'; allowed: random, rest"),
    (dict(environment="pendulum", num_runs=0), "num_runs must be a positive integer, got 0"),
    (dict(environment="pendulum", num_frames=-5), "num_frames must be a positive integer, got -5"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DatasetConfig(**kwargs)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "keycld.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args,match", [
    (["data", "--environment", "pendulum", "---batch_size=1"], "three dashes"),
    (["data", "--environment", "walker"], "invalid choice: 'walker'"),
    (["data", "--environment", "pendulum", "--control", "underactuated"], "needs two actuators"),
    (["data", "--environment", "pendulum", "--num_runs", "-1"], "positive integer, got -1"),
    (["data", "--environment", "pendulum", "--cache_dir", "/dev/null/cache"], "not writable"),
])
def test_cli_rejects_bad_input_before_work(args, match, tmp_path):
    r = _cli(*args)
    assert r.returncode == 2
    assert match in r.stderr
    assert "generating" not in r.stderr


# SHA-256 of two runs (seeds 0, 1; 5 frames) of each task, computed with the code before the
# System re-layering (mujoco 3.17.0, Debian Mesa llvmpipe): physics arrays, then frames.
REFERENCE_RUNS = [
    ("pendulum", "yes", "7997f4374a5d6b0037f62c32604c127af54853ab0cd77e68d94f80e7f8f49803",
     "e4bfa2a7eef0a5f5d7b868525166dbbde078fe1dbf1c1d809f1da00e74c34e67"),
    ("cartpole", "underactuated", "fd22abeda39edee217e050cbb93e843aeae25fe6f438f4ae4c6b93ef541296e5",
     "3068f3a8487f484f5fbd7772a484f0f298a1ee2ac130e6195ca9967b8053c864"),
    ("acrobot", "yes", "462a932d31db3f9a72d74fd3647db8af43bfe3fe72a89a12ed6181693e9314ae",
     "f3de292016074bb69bfc1ffef99013b16aa242da317ce29d6ab161d179236c40"),
]


@pytest.mark.parametrize("environment, control, physics_sha, frames_sha", REFERENCE_RUNS)
def test_paper_runs_are_bit_identical_to_the_reference(environment, control, physics_sha, frames_sha):
    import hashlib

    import mujoco

    hp, hf = hashlib.sha256(), hashlib.sha256()
    for seed in (0, 1):
        run = generate_run(environment, "random", control, seed, 5)
        for k in ("qpos", "qvel", "time", "action"):
            hp.update(np.ascontiguousarray(run[k]).tobytes())
        hf.update(run["frames"].tobytes())
    assert hp.hexdigest() == physics_sha
    if mujoco.__version__ != "3.17.0":
        pytest.skip(f"frames reference made with mujoco 3.17.0, this is {mujoco.__version__}")
    assert hf.hexdigest() == frames_sha
