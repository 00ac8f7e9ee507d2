"""The keycld command re-executes itself under tcmalloc (keycld._allocator)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from keycld import _allocator as A

LIB = "libtcmalloc_minimal.so.4"


def test_auto_preloads_the_library_first_and_marks_the_reexec():
    env = A.tcmalloc_environment({"LD_PRELOAD": "libother.so", "PATH": "/bin"}, lambda: LIB)
    assert env["LD_PRELOAD"] == f"{LIB} libother.so"
    assert env[A.REEXEC_VAR] == "1" and env["PATH"] == "/bin"
    assert A.tcmalloc_environment({}, lambda: LIB)["LD_PRELOAD"] == LIB


@pytest.mark.parametrize("environ", [{A.ALLOCATOR_VAR: "system"}, {A.REEXEC_VAR: "1"},
                                     {"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"}])
def test_nothing_changes_when_opted_out_already_reexecuted_or_preloaded(environ):
    assert A.tcmalloc_environment(environ, lambda: LIB) is None


def test_missing_library():
    assert A.tcmalloc_environment({}, lambda: None) is None  # auto: glibc's malloc
    with pytest.raises(ValueError, match="libtcmalloc-minimal4"):
        A.tcmalloc_environment({A.ALLOCATOR_VAR: "tcmalloc"}, lambda: None)


def test_bad_choice_is_named_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"KEYCLD_ALLOCATOR='jemalloc'.*auto, tcmalloc, system"):
        A.tcmalloc_environment({A.ALLOCATOR_VAR: "jemalloc"}, lambda: LIB)


def test_command_rejects_a_bad_choice_before_any_work(tmp_path):
    env = dict(os.environ, KEYCLD_ALLOCATOR="jemalloc")
    res = subprocess.run([sys.executable, "-m", "keycld.cli", "train", "--environment", "pendulum",
                          "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True)
    assert res.returncode == 2
    assert "KEYCLD_ALLOCATOR='jemalloc'" in res.stderr and not (tmp_path / "run").exists()


_PROBE = textwrap.dedent("""
    import sys
    from keycld._allocator import reexec_under_tcmalloc, tcmalloc_loaded
    print("before", flush=True)
    reexec_under_tcmalloc()
    print("loaded", tcmalloc_loaded(), sys.argv[1:])
""")


@pytest.mark.skipif(A.find_tcmalloc() is None or not sys.platform.startswith("linux"),
                    reason="no tcmalloc installed (make setup installs libtcmalloc-minimal4)")
@pytest.mark.parametrize("choice,loaded", [("auto", True), ("tcmalloc", True), ("system", False)])
def test_reexec_runs_the_same_command_under_tcmalloc(tmp_path, choice, loaded):
    script = tmp_path / "probe.py"
    script.write_text(_PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", A.REEXEC_VAR)}
    env[A.ALLOCATOR_VAR] = choice
    res = subprocess.run([sys.executable, str(script), "a", "--b"], env=env, capture_output=True, text=True,
                         check=True)
    # printed once before the exec (flushed), then the re-executed process prints it again
    assert res.stdout.count("before") == (2 if loaded else 1)
    assert res.stdout.splitlines()[-1] == f"loaded {loaded} ['a', '--b']"
