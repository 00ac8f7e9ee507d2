"""The package's layering, checked on the syntax tree of every module (imports inside functions
included): ``keycld`` ← ``keycld_gym`` ← ``agents``, no import cycles, one owner of the run-directory
file names, and a generic core that names no built-in system."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("keycld", "keycld_gym", "agents")
LAYER = {"keycld": 0, "keycld_gym": 1, "agents": 2}
BUILTIN_NAMES = ("pendulum", "cartpole", "acrobot")
GENERIC_CORE = ("keycld/model/__init__.py", "keycld/model/constraints.py", "keycld/model/dynamics.py",
                "keycld/model/integrators.py", "keycld/model/keycld.py", "keycld/model/keypoints.py",
                "keycld/model/networks.py", "keycld/train.py", "keycld/losses.py", "keycld_gym/functional.py",
                "keycld_gym/vector.py", "keycld_gym/envs.py")
PER_SYSTEM_MODULES = {"keycld.tasks", "keycld_gym.paper"}
PER_SYSTEM_NAMES = {"TASK_SPECS", "CONSTRAINTS", "REWARDS", "BUILTIN", "PENDULUM", "CARTPOLE", "ACROBOT"}
RUN_FILE_NAMES = ("config.json", "checkpoint.msgpack", "params.msgpack", "metrics.jsonl", "vpt.json",
                  "vpt_heldout.json", "init_from.json", "reset_bank.npz", "model.json", "MODEL_CARD.md", "system.py")
FORMAT_OWNER = "keycld/rundir.py"
# agents/train_sb3.py writes its own agent directories (config.json of the SB3 run, not a KeyCLD run)
OTHER_FORMATS = ("agents/train_sb3.py",)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported dotted name refers to (longest known prefix), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return None


def _imports(module: str) -> set[str]:
    """Project modules ``module`` imports, at any depth of its syntax tree."""
    tree = ast.parse(MODULES[module].read_text())
    is_pkg = MODULES[module].name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = module.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for n in names:
            target = _resolve(n)
            if target is not None and target != module:
                found.add(target)
    # "from keycld import x" also resolves to the package itself; keep the specific module only
    return {t for t in found if not any(o != t and o.startswith(t + ".") for o in found) or t in (
        n for n in found if MODULES[n].name != "__init__.py")}


GRAPH = {m: _imports(m) for m in MODULES}


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                ids.add(id(body[0].value))
    return ids


def _strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant that is not a docstring."""
    tree = ast.parse(path.read_text())
    docs = _docstring_nodes(tree)
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_imports_go_one_way():
    bad = [f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
           if LAYER[t.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert not bad, "keycld <- keycld_gym <- agents is violated:\n" + "\n".join(bad)


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every back edge of a depth-first search, as 'a -> b -> a'."""
    colour: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        colour[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if colour.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in colour:
                visit(t)
        stack.pop()
        colour[m] = 2

    for m in sorted(graph):
        if m not in colour:
            visit(m)
    return cycles


def test_no_import_cycles():
    cycles = find_cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("relpath", GENERIC_CORE)
def test_generic_core_names_no_builtin_system(relpath):
    path = ROOT / relpath
    named = [f"line {line}: {text!r}" for line, text in _strings(path)
             if any(name in text.lower() for name in BUILTIN_NAMES)]
    assert not named, f"{relpath} names a built-in system:\n" + "\n".join(named)
    module = next(m for m, p in MODULES.items() if p == path)
    assert not GRAPH[module] & PER_SYSTEM_MODULES, f"{relpath} imports {GRAPH[module] & PER_SYSTEM_MODULES}"
    tree = ast.parse(path.read_text())
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not used & PER_SYSTEM_NAMES, f"{relpath} uses per-system tables {used & PER_SYSTEM_NAMES}"


def test_one_module_spells_the_run_directory_file_names():
    spelled = []
    for module, path in MODULES.items():
        if path.relative_to(ROOT).as_posix() in (FORMAT_OWNER, *OTHER_FORMATS):
            continue
        for line, text in _strings(path):
            if text in RUN_FILE_NAMES:
                spelled.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert not spelled, f"only {FORMAT_OWNER} may spell run-directory file names:\n" + "\n".join(spelled)


def test_the_checks_see_what_they_check():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    assert {"keycld.commands"} <= GRAPH["keycld.cli"] and "keycld.train_cli" in GRAPH["keycld.commands"]
    # the import graph is not empty and sees function-level imports
    assert "keycld.rundir" in GRAPH["keycld.train"]
    assert "keycld.data" in GRAPH["keycld.train"]  # imported inside load_training_data only
    assert "keycld_gym.loading" in GRAPH["keycld_gym.envs"]  # imported inside KeyCLDEnv.__init__
    assert any("pendulum" in t for _, t in _strings(ROOT / "keycld/systems.py"))
