"""What gets installed: the wheel's contents and metadata, the declared dependencies against the
imports of the installed packages, and the jax-version gate of the XLA flag."""
from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from keycld import _xla

ROOT = Path(__file__).resolve().parent.parent
# installed import name -> its directory in the repository
INSTALLED = {"keycld": "keycld", "keycld_gym": "keycld_gym", "keycld_agents": "agents"}
MODEL_FILES = ("params.msgpack", "model.json", "reset_bank.npz")
# copied into the build tree: everything but environments, caches, build outputs and results
NOT_COPIED = (".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
              "results", "runs", "demo", ".whl", ".gl")
WHEEL_SECONDS = 60


def _normalize(name: str) -> str:
    """PEP 503 form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _requirements(text: str) -> set[str]:
    """Normalized distribution names of a setup.cfg requirement list."""
    names = set()
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(_normalize(re.match(r"[A-Za-z0-9._-]+", line)[0]))
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel pip builds from a copy of the repository (no stale build/ of the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_COPIED))
    out = tmp / "out"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(out), str(src)],
                            capture_output=True, text=True, timeout=WHEEL_SECONDS)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = out.glob("*.whl")
    with zipfile.ZipFile(path) as z:
        yield z


@pytest.mark.wheel
def test_wheel_installs_exactly_the_three_packages_with_models_and_markers(wheel):
    names = wheel.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == set(INSTALLED), f"top-level names {sorted(top)}; expected {sorted(INSTALLED)}"
    for package in INSTALLED:
        assert f"{package}/py.typed" in names, f"{package}/py.typed missing"
    systems = sorted(p.name for p in (ROOT / "keycld_gym" / "models").iterdir() if p.is_dir())
    assert systems, "no shipped models in keycld_gym/models"
    for system in systems:
        for file in MODEL_FILES:
            name = f"keycld_gym/models/{system}/{file}"
            assert name in names, f"{name} missing from the wheel"
            assert wheel.read(name) == (ROOT / name).read_bytes(), f"{name} differs from the repository"
    # every module of the three packages is in the wheel
    for package, directory in INSTALLED.items():
        for module in (ROOT / directory).rglob("*.py"):
            name = f"{package}/{module.relative_to(ROOT / directory).as_posix()}"
            assert name in names, f"{name} missing from the wheel"


@pytest.mark.wheel
def test_wheel_metadata(wheel):
    dist_info = next(n.split("/")[0] for n in wheel.namelist() if n.split("/")[0].endswith(".dist-info"))
    meta = wheel.read(f"{dist_info}/METADATA").decode()
    assert re.search(r"^Requires-Python: >=3\.11$", meta, re.M), meta[:2000]
    requires = {_normalize(re.match(r"[A-Za-z0-9._-]+", line[len("Requires-Dist: "):])[0])
                for line in meta.splitlines() if line.startswith("Requires-Dist: ") and "extra ==" not in line}
    assert requires == _requirements(_setup_cfg()["options"]["install_requires"])
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert re.search(r"^keycld = keycld_agents\.cli:main$", entry_points, re.M), entry_points


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level names the installed packages import (at any depth) that are neither the standard
    library nor the packages themselves -> the files importing them."""
    own = set(INSTALLED) | {"agents"}
    found: dict[str, set[str]] = {}
    for directory in set(INSTALLED.values()):
        for path in (ROOT / directory).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in own:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared_and_every_declared_package_is_used():
    cfg = _setup_cfg()
    core = _requirements(cfg["options"]["install_requires"])
    extras = {name: _requirements(text) for name, text in cfg["options.extras_require"].items()}
    declared = core.union(*extras.values())
    imports = _third_party_imports()
    assert "scipy" in imports  # the scan sees imports inside functions of agents/
    distributions = metadata.packages_distributions()
    used = set()
    for top, files in sorted(imports.items()):
        candidates = {_normalize(d) for d in distributions.get(top, [top])}
        assert candidates & declared, (f"{top!r} (imported by {sorted(files)}) comes from {sorted(candidates)}, "
                                       "which setup.cfg declares neither in install_requires nor in an extra")
        used |= candidates & declared
    # the test extra serves the test suite, not the installed packages
    unused = (core | set().union(*(v for k, v in extras.items() if k != "test"))) - used
    assert not unused, f"setup.cfg declares {sorted(unused)}, which no installed module imports"


def test_installed_versions_satisfy_the_declared_bounds():
    from packaging.requirements import Requirement

    cfg = _setup_cfg()
    lines = [cfg["options"]["install_requires"], *cfg["options.extras_require"].values()]
    for line in "\n".join(lines).splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue  # an extra this environment does not install (wandb)
        assert req.specifier.contains(installed, prereleases=True), f"installed {req.name} {installed} ∉ {req}"


@pytest.mark.parametrize("version, applies", [("0.10.2", True), ("0.10.0", True), ("0.10.3.dev20260101", True),
                                              ("0.11.0", False), ("0.1.0", False), ("0.100.1", False),
                                              ("1.10.0", False), ("", False), (None, False)])
def test_xla_flag_only_on_the_measured_jax(version, applies):
    assert _xla.flag_applies(version) is applies


@pytest.mark.parametrize("version, opt_out, expected", [
    ("0.10.2", None, f"--xla_foo=1 {_xla.YNN_FLAG}"),
    ("0.11.0", None, "--xla_foo=1"),
    (None, None, "--xla_foo=1"),
    ("0.10.2", "1", "--xla_foo=1"),
])
def test_configure_xla_leaves_flags_alone_off_the_measured_range(monkeypatch, version, opt_out, expected):
    monkeypatch.setattr(_xla, "installed_jax_version", lambda: version)
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1")
    if opt_out is None:
        monkeypatch.delenv("KEYCLD_NO_XLA_FLAGS", raising=False)
    else:
        monkeypatch.setenv("KEYCLD_NO_XLA_FLAGS", opt_out)
    assert _xla.configure_xla() is (_xla.YNN_FLAG in expected)
    assert os.environ["XLA_FLAGS"] == expected
    assert _xla.configure_xla() is (_xla.YNN_FLAG in expected)  # idempotent
    assert os.environ["XLA_FLAGS"] == expected


def test_installed_jax_version_is_read_from_metadata():
    assert _xla.installed_jax_version() == metadata.version("jax")


POSIX_ONLY = ("fcntl", "termios", "pwd", "grp", "resource", "tty", "pty")


def test_every_installed_module_imports_without_posix_only_modules():
    """``import keycld`` and every submodule works where fcntl and the like do not exist."""
    code = f"""
import importlib, pkgutil, sys
for name in {POSIX_ONLY!r}:
    sys.modules[name] = None  # importing it raises ImportError
failed = []
for package in {sorted(INSTALLED)!r}:
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, package + "."):
        try:
            importlib.import_module(module.name)
        except Exception as err:
            failed.append(f"{{module.name}}: {{type(err).__name__}}: {{err}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
