"""The house rules of the layout: the core folders under transforms/ never load Apache Beam, and
nothing under transforms/ or schemas/ imports the launcher (pipeline/).

Beam is checked by importing each module in a fresh interpreter, so a module that pulls Beam in
through another module is caught too; the launcher rule is checked on the source, so an import
inside a function that a test never calls is caught as well.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_FOLDERS = ("io", "audio", "model", "scoring")
# A core module may load Beam only if its docstring says why, on a line starting with this.
BEAM_EXEMPTION = "Needs Apache Beam:"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_modules() -> list[str]:
    found = []
    for folder in CORE_FOLDERS:
        for path in sorted((ROOT / "transforms" / folder).glob("*.py")):
            found.append(_module_name(path))
    return found


def test_core_folders_exist_and_hold_modules():
    modules = _core_modules()
    for folder in CORE_FOLDERS:
        assert f"transforms.{folder}" in modules, f"transforms/{folder}/__init__.py is missing"
        assert any(m.startswith(f"transforms.{folder}.") for m in modules), f"transforms/{folder}/ is empty"


_PROBE = """
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
print(json.dumps({
    "beam": sorted(m for m in sys.modules if m == "apache_beam" or m.startswith("apache_beam.")),
    "launcher": sorted(m for m in sys.modules if m == "pipeline" or m.startswith("pipeline.")),
    "doc": module.__doc__ or "",
}))
"""


@pytest.mark.parametrize("module", _core_modules())
def test_core_module_loads_without_beam_or_launcher(module):
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    done = subprocess.run([sys.executable, "-c", _PROBE, module], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"importing {module} failed:\n{done.stderr[-3000:]}"
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert not seen["launcher"], f"{module} loads the launcher: {seen['launcher'][:5]}"
    if seen["beam"]:
        assert BEAM_EXEMPTION in seen["doc"], (
            f"{module} loads apache_beam ({seen['beam'][:3]}...) and its docstring does not say why "
            f"(a line starting {BEAM_EXEMPTION!r})")


def _imported_names(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def _sources_below(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_transforms_and_schemas_never_import_the_launcher():
    sources = _sources_below("transforms", "schemas")
    assert len(sources) > 20  # the walk found the house, not an empty folder
    offenders = []
    for path in sources:
        for lineno, name in _imported_names(ast.parse(path.read_text(), filename=str(path))):
            if name == "pipeline" or name.startswith("pipeline."):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno} imports {name}")
    assert offenders == []


def test_import_check_sees_imports_inside_functions():
    # The launcher rule walks the whole tree, so a lazy import is an import too.
    tree = ast.parse("def f():\n    from pipeline.main import run\n    import pipeline.report\n")
    assert [name for _, name in _imported_names(tree)] == ["pipeline.main", "pipeline.report"]


# A run's life on storage and the lakehouse know nothing of how a run was launched: they never
# import the launcher's parts or the commands users run.
STORAGE_FOLDERS = ("pipeline/runs", "pipeline/lakehouse")
LAUNCH_AND_COMMANDS = ("pipeline.launch", "pipeline.main", "pipeline.report", "pipeline.evaluate",
                       "pipeline.demo", "pipeline.index", "pipeline.search", "pipeline.classify")


def _is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _absolute_imports(path: Path, tree: ast.AST):
    """(line, module) for every import in the file, relative ones resolved, and for
    `from package import name` also package.name (the name may be a module)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def test_runs_and_lakehouse_never_import_the_launcher_or_the_commands():
    sources = _sources_below(*STORAGE_FOLDERS)
    for folder in STORAGE_FOLDERS:
        assert any(p.parent == ROOT / folder for p in sources), f"{folder}/ holds no module"
    offenders = []
    for path in sources:
        for lineno, name in _absolute_imports(path, ast.parse(path.read_text(), filename=str(path))):
            if any(_is_within(name, banned) for banned in LAUNCH_AND_COMMANDS):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno} imports {name}")
    assert offenders == []


def test_storage_import_check_sees_every_form_of_import():
    # Inside functions, `from pipeline import launch`, and relative imports all count.
    path = ROOT / "pipeline" / "runs" / "publish.py"
    tree = ast.parse("def f():\n    from pipeline import launch\n    from ..main import run\n"
                     "    import pipeline.report\n")
    names = {name for _, name in _absolute_imports(path, tree)}
    assert {"pipeline.launch", "pipeline.main", "pipeline.main.run", "pipeline.report"} <= names


@pytest.mark.parametrize("folder", ["launch", "runs", "lakehouse", "demo", "console", "vectors", "classes"])
def test_each_pipeline_folder_says_what_lives_there(folder):
    init = ROOT / "pipeline" / folder / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert doc.strip() and len(doc.strip().splitlines()) == 1, f"{init} needs a one-line docstring"
