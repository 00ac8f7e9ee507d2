"""benchmarks/train_step.py: each measuring subprocess gets the process setting it reports.

The parent imports keycld, which appends the XLA flag to its own ``XLA_FLAGS``; a "flag off"
subprocess must not inherit it (it once did, and its rows measured the flag on).
"""
from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from keycld._xla import YNN_FLAG

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ts():
    return SimpleNamespace(**runpy.run_path(str(ROOT / "benchmarks" / "train_step.py")))


def test_flag_off_removes_the_flag_the_parent_inherited(ts, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=1 {YNN_FLAG}")
    env = ts.setting_env(False, False)
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1"
    assert env["KEYCLD_NO_XLA_FLAGS"] == "1"
    assert not ts.ynn_flag_set(env["XLA_FLAGS"])


def test_flag_on_keeps_it_and_lets_keycld_add_it(ts, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", YNN_FLAG)
    monkeypatch.setenv("KEYCLD_NO_XLA_FLAGS", "1")
    env = ts.setting_env(True, False)
    assert ts.ynn_flag_set(env["XLA_FLAGS"]) and "KEYCLD_NO_XLA_FLAGS" not in env
    monkeypatch.delenv("XLA_FLAGS")
    assert "KEYCLD_NO_XLA_FLAGS" not in ts.setting_env(True, False)


def test_glibc_setting_drops_a_preloaded_tcmalloc(ts, monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "libfoo.so libtcmalloc_minimal.so.4")
    assert ts.setting_env(True, False)["LD_PRELOAD"] == "libfoo.so"


@pytest.mark.parametrize("flags, expected", [
    (YNN_FLAG, True), (f"--a=1 {YNN_FLAG} --b=2", True), ("", False),
    (f"{YNN_FLAG}individual_dot", False),  # a user's own YNN setting is not keycld's flag
])
def test_ynn_flag_set_matches_the_exact_token(ts, flags, expected):
    assert ts.ynn_flag_set(flags) is expected


def test_bad_original_src_exits_2_before_any_work(ts, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["train_step.py", "--original-src", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        ts.main()
    assert e.value.code == 2
    assert "github.com/rdaems/keycld" in capsys.readouterr().err
