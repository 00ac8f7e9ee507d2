"""Bad inputs and faults a user meets with run directories, the training CLI and model loading:
each is refused with a message naming the bad value, file or field, before anything is written
(the directories' files keep their bytes and mtimes), and the CLI exits with status 2."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import keycld.train as T
from keycld import checkpoint, fileio, rundir
from keycld.config import TrainConfig
from keycld.model.keycld import KeyCLD
from test_train import TINY

ROOT = Path(__file__).resolve().parent.parent
TINY_FLAGS = [f"--{k}={v}" for k, v in TINY.items()] + ["--quiet", "--no_gif"]
TINY_CFG = TrainConfig(**TINY, num_epochs=1)


def _cli(argv, capsys) -> str:
    """Run the installed command line with ``argv``; assert it exits with status 2; its stderr."""
    from agents.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    return capsys.readouterr().err


def _snapshot(root: Path) -> dict:
    """Every file under ``root``: relative path -> (bytes, mtime)."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _fake_run(run_dir: Path, cfg: TrainConfig = TINY_CFG, epochs: int | None = None) -> Path:
    """A run directory of ``cfg`` as training leaves it after ``epochs`` (default: all) epochs,
    with freshly initialised weights (no training)."""
    model = KeyCLD.from_config(cfg)
    run_dir.mkdir(parents=True)
    cfg.save(run_dir / rundir.CONFIG)
    epochs = cfg.num_epochs if epochs is None else epochs
    tree = {**T._checkpoint_tree(T.init_state(cfg, model), epochs, 1.0), "model": cfg.model}
    checkpoint.save(run_dir / rundir.CHECKPOINT, tree)
    rundir.append_metrics(run_dir, {"epoch": epochs, "step": 4 * epochs, "wall_time_s": 1.0})
    return run_dir


def _fake_bank(system, model, weights, size, seed=0):
    """A bank of ``size`` copies of one resting state on Φ(x) = c (stands in for MuJoCo resets)."""
    x = jnp.linspace(0.3, -0.2, 2 * model.num_keypoints)
    state = np.concatenate([np.asarray(x), np.zeros(2 * model.num_keypoints)]).astype(np.float32)
    return {"states": np.tile(state, (size, 1)), "qpos": np.zeros((size, 1)), "qvel": np.zeros((size, 1)),
            "seeds": np.arange(seed, seed + size), "constraint_offset": np.asarray(model.dynamics.phi(x), np.float32)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"run": a finished tiny run, "export": its export (``keycld export``, 2 resets)}."""
    from keycld_gym import loading, zoo

    root = tmp_path_factory.mktemp("faults")
    run = _fake_run(root / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "build_bank", _fake_bank)
        export = zoo.export(run, root / "export", hardware="test", bank_size=2)
    return {"run": run, "export": export}


def _copy(src: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(src, tmp_path / name))


# ---- 1: --out on a directory that is not a run of this configuration ----------------------------
@pytest.mark.parametrize("kind", ["shipped model", "other files", "other config"])
def test_train_out_refuses_a_directory_holding_something_else(kind, tmp_path, capsys):
    out = tmp_path / "out"
    if kind == "shipped model":
        shutil.copytree(ROOT / "keycld_gym" / "models" / "pendulum", out)
        expected = "holds an exported model"
    elif kind == "other files":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        expected = "holds no run of this configuration .*notes.txt"
    else:
        out.mkdir()
        TrainConfig(**{**TINY, "num_hidden_dim": 16}).save(out / rundir.CONFIG)
        expected = "unstarted run of another configuration .*num_hidden_dim: 16 -> 8"
    before = _snapshot(out)
    err = _cli(["train", *TINY_FLAGS, "--out", out], capsys)
    assert str(out) in err
    import re
    assert re.search(expected, err), err
    assert _snapshot(out) == before


def test_an_unstarted_run_of_the_same_config_may_restart(tmp_path):
    """Killed before its first checkpoint: the same command starts it again."""
    out = tmp_path / "out"
    out.mkdir()
    TINY_CFG.save(out / rundir.CONFIG)
    rundir.append_metrics(out, {"epoch": 1})  # its first epoch's line, written before the checkpoint
    rundir.check_new_run(out, TINY_CFG)
    with pytest.raises(FileExistsError, match="another configuration"):
        rundir.check_new_run(out, TrainConfig(**TINY, num_epochs=2))


# ---- 2: two trainings in one run directory -----------------------------------------------------
def test_a_run_directory_in_use_is_refused(runs, tmp_path, capsys):
    run = _copy(runs["run"], tmp_path)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from filelock import FileLock\n"
         "locks = [FileLock(p) for p in sys.argv[1:]]\n[l.acquire() for l in locks]\nprint('held', flush=True)\n"
         "sys.stdin.read()", str(run / rundir.LOCK), str(fresh / rundir.LOCK)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before, before_fresh = _snapshot(run), _snapshot(fresh)
        err = _cli(["train", "--resume", run, "--num_epochs", "3"], capsys)
        assert f"run directory {run} is in use by another process" in err
        err = _cli(["train", *TINY_FLAGS, "--out", fresh], capsys)
        assert f"run directory {fresh} is in use by another process" in err
        with pytest.raises(fileio.LockedError, match="in use"):
            T.train(TINY_CFG, fresh, progress=False)
        assert _snapshot(run) == before and _snapshot(fresh) == before_fresh
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


# ---- 3: damaged weights of an export ---------------------------------------------------------
def test_damaged_export_weights_are_refused(runs, tmp_path, capsys):
    from keycld_gym.loading import load_env_params

    out = _copy(runs["export"], tmp_path)
    recorded = json.loads((out / rundir.MODEL_INFO).read_text())["weights_sha256"]
    assert recorded == fileio.sha256(out / rundir.PARAMS)
    load_env_params("pendulum", out, bank_size=2)  # intact: loads
    data = bytearray((out / rundir.PARAMS).read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.choice(np.arange(len(data) // 2, len(data)), 200, replace=False):  # inside the weights
        data[i] ^= 0xFF
    (out / rundir.PARAMS).write_bytes(bytes(data))
    actual = fileio.sha256(out / rundir.PARAMS)
    before = _snapshot(out)
    for load in (lambda: rundir.load_model(out), lambda: load_env_params("pendulum", out, bank_size=2)):
        with pytest.raises(ValueError, match=f"{out / rundir.PARAMS}.*SHA-256 is {actual}.*records {recorded}"):
            load()
    assert "records " + recorded in _cli(["evaluate", out], capsys)
    assert _snapshot(out) == before


@pytest.mark.parametrize("system", ["pendulum", "cartpole", "acrobot"])
def test_shipped_models_record_their_weights_sha256(system):
    directory = ROOT / "keycld_gym" / "models" / system
    info = json.loads((directory / rundir.MODEL_INFO).read_text())
    assert info["weights_sha256"] == fileio.sha256(directory / rundir.PARAMS)
    assert info["model"] == rundir.load_config(directory).model


# ---- 4: a reset bank with damaged contents ------------------------------------------------------
@pytest.mark.parametrize("entry, damage, message", [
    ("states", lambda s: s.__setitem__((1, 0), np.nan), "'states' row 1 is not finite"),
    ("states", lambda s: s.__setitem__((0, 3), 1e6), "'states' row 0 .* outside the observation space"),
    ("constraint_offset", lambda c: c.__setitem__(0, np.nan), "'constraint_offset' must be 1 finite floats"),
    ("constraint_offset", lambda c: c.__setitem__(0, c[0] + 0.5), "'states' row 0 lies 0.5 off the manifold"),
])
def test_damaged_reset_bank_is_refused(runs, tmp_path, entry, damage, message):
    from keycld_gym.loading import BANK_FILE, load_env_params, save_bank

    out = _copy(runs["export"], tmp_path)
    with np.load(out / BANK_FILE) as z:
        bank = {k: z[k].copy() for k in z.files}
    damage(bank[entry])
    save_bank(out / BANK_FILE, bank)  # same weights' SHA-256: the file claims to fit them
    before = _snapshot(out)
    with pytest.raises(ValueError, match=f"reset bank {out / BANK_FILE}: {message}"):
        load_env_params("pendulum", out, bank_size=2)
    assert _snapshot(out) == before  # neither used nor rebuilt over


# ---- 5: --resume with flags that would change the run ------------------------------------------
def test_resume_refuses_flags_that_change_the_run(runs, tmp_path, capsys):
    from keycld.train_cli import resume_conflicts, script_parser

    run = _copy(runs["run"], tmp_path)
    before = _snapshot(run)
    err = _cli(["train", "--resume", run, "--batch_size", "2", "--learning_rate", "0.1", "--num_epochs", "3"], capsys)
    assert "--batch_size 2 (saved: 1)" in err and "--learning_rate 0.1 (saved: 0.0003)" in err
    assert "--num_epochs" not in err.split("would change it:")[1].split(".")[0]
    assert _snapshot(run) == before
    parser = script_parser("keycld")
    same = parser.parse_args(["--resume", str(run), "--environment", "pendulum", "--num_hidden_dim", "8"])
    assert resume_conflicts(same, TINY_CFG, run, "keycld") == []
    assert resume_conflicts(same, TINY_CFG, run, "node2") == ["model node2 of this script (saved: keycld)"]


# ---- 6 and 7: values that pass argparse but cannot train --------------------------------------
BAD_TRAIN = [
    (["--batch_size", "5"], "batch_size 5 exceeds the 4 training runs"),
    (["--seed", "-1"], "seed must be an integer in \\[0, 2\\*\\*31\\), got -1"),
    (["--seed", str(2 ** 70)], f"got {2 ** 70}"),
    (["--batch_size", "1e20"], "expected a positive integer, got '1e20'"),
    (["--num_hidden_dim", str(10 ** 20)], "num_hidden_dim must be an integer in \\[8, 1024\\]"),
    (["--num_runs", str(10 ** 20)], "num_runs must be an integer in \\[1, 100000\\]"),
    (["--num_frames", str(10 ** 20)], "num_frames must be an integer in \\[3, 10000\\]"),
]


@pytest.mark.parametrize("flags, message", BAD_TRAIN, ids=[" ".join(f) for f, _ in BAD_TRAIN])
def test_bad_train_values_exit_2_before_writing(flags, message, tmp_path, capsys):
    import re

    err = _cli(["train", *TINY_FLAGS, *flags, "--out", tmp_path / "run"], capsys)
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_bad_paths_exit_2_before_writing(runs, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    bad_config = _copy(runs["run"], tmp_path, "bad_config")
    (bad_config / rundir.CONFIG).write_text("{not json")
    before = _snapshot(tmp_path)
    cases = [
        (["train", *TINY_FLAGS, "--out", afile], f"--out {afile} is a file"),
        (["train", *TINY_FLAGS, "--out", afile / "run"], f"lies under {afile}, which is a file"),
        (["train", *TINY_FLAGS, "--out", tmp_path / "run", "--cache_dir", afile / "cache"], "--cache_dir: cache dir"),
        (["data", "--environment", "pendulum", "--num_runs", "2", "--first_seed", "4294967296",
          "--cache_dir", tmp_path / "cache"], "first_seed must be an integer in \\[0, 2\\*\\*32 - num_runs"),
        (["export", tmp_path, "--out", tmp_path / "export"], f"{tmp_path} is not a run directory"),
        (["export", runs["run"], "--out", bad_config], f"--out {bad_config} is a directory that holds no exported"),
        (["train", "--resume", bad_config], f"{bad_config / rundir.CONFIG} is not a valid run configuration"),
    ]
    import re
    for argv, message in cases:
        assert re.search(message, _cli(argv, capsys)), argv
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "bad_config"]


def test_cli_errors_carry_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "keycld.cli", "train", *TINY_FLAGS, "--seed", "-1",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: seed must be an integer in [0, 2**31), got -1" in proc.stderr


# ---- 8: config.json contents that do not describe the weights ----------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda c: {**c, "num_hidden_dim": "8"}, "num_hidden_dim must be an integer, got '8'"),
    (lambda c: {**c, "augment": "yes"}, "augment must be true or false, got 'yes'"),
    (lambda c: [c], "a configuration is a JSON object of fields, got list"),
    (lambda c: {**c, "num_hidden_dim": 16}, "bias has shape \\(8,\\), the model needs \\(16,\\).*num_hidden_dim \\(16\\)"),
    (lambda c: {**c, "model": "node2"}, "model.{0,20}'node2'"),
    (lambda c: {**c, "model": "no_constraint"}, "field 'model' is 'no_constraint', but the weights are of a 'keycld'"),
], ids=["type", "bool", "not-an-object", "hidden", "node2", "no_constraint"])
@pytest.mark.parametrize("kind", ["run", "export"])
def test_config_that_does_not_fit_names_file_and_field(runs, tmp_path, kind, edit, message):
    import re

    out = _copy(runs[kind], tmp_path)
    cfg = json.loads((out / rundir.CONFIG).read_text())
    (out / rundir.CONFIG).write_text(json.dumps(edit(cfg)))
    with pytest.raises(ValueError) as exc:
        rundir.load_model(out)
    text = str(exc.value)
    assert str(out) in text and re.search(message, text), text


# ---- 9: --resume on an exported model --------------------------------------------------------
def test_resume_on_an_export_leaves_it_untouched(runs, tmp_path, capsys):
    out = _copy(runs["export"], tmp_path)
    before = _snapshot(out)
    err = _cli(["train", "--resume", out, "--num_epochs", "50"], capsys)
    assert f"{out} is an exported model" in err and f"--init_from {out}" in err
    with pytest.raises(ValueError, match="exported model"):
        T.train(TrainConfig(**TINY, num_epochs=50), out, resume=True, progress=False)
    assert _snapshot(out) == before


# ---- 12: temporaries a killed writer left -----------------------------------------------------
def test_stale_temporaries_are_removed_when_training_resumes(runs, tmp_path, tiny_cache):
    run = _copy(runs["run"], tmp_path)
    stale = run / ".checkpoint.msgpack.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    older = run / ".checkpoint.msgpack.tmp4242"  # an earlier writer's naming
    older.write_bytes(b"half a checkpoint")
    keep = run / ".notes.tmpl"  # not a temporary of ours
    keep.write_bytes(b"x")
    saved = (run / rundir.CHECKPOINT).read_bytes()
    T.train(TINY_CFG, run, resume=True, cache_dir=tiny_cache, progress=False, validate=False, gif=False)
    assert not stale.exists() and not older.exists() and keep.exists()
    assert (run / rundir.CHECKPOINT).read_bytes() == saved  # finished run: nothing retrained
