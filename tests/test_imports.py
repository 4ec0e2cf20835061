"""The package's shape: every module imports alone, and no module-level import closes a circle.

The layers (README, Layout): the stdlib's API (servers, mixins, handlers) reaches the cores only
through ``_cores``, the one place that picks them; a core reaches the server only through the
seam (``_seam``) and the policy (``_policy``). These tests read the sources, compiled ones
included, so that a circle or a layer crossing fails here before it fails an import at random.
"""

import ast
import os
import re
import subprocess
import sys

import pytest

import fastserver

PACKAGE = os.path.dirname(os.path.abspath(fastserver.__file__))
API = {"servers", "mixins", "handlers"}
CORE_PARTS = {"_core", "_core_py", "_dispatch", "_stream", "_stream_py", "_proxy", "_proxy_py",
              "_turns", "_acceptors"}


def _modules():
    """Module name -> source path, for the package's own .py and .pyx modules."""
    found = {}
    for entry in sorted(os.listdir(PACKAGE)):
        name, ext = os.path.splitext(entry)
        if ext in (".py", ".pyx") and name != "__main__":
            found[name] = os.path.join(PACKAGE, entry)
    return found


MODULES = _modules()
_CYTHON_IMPORT = re.compile(
    r"^(?:from\s+fastserver(?:\.(\w+))?\s+c?import\s+([\w, ()]+)|import\s+fastserver\.(\w+))",
    re.M)


def _top_level_imports(path):
    """The package's modules that ``path`` imports when it is imported (not in functions)."""
    with open(path, encoding="utf-8") as source:
        text = source.read()
    imported = set()
    if path.endswith(".pyx"):
        for match in _CYTHON_IMPORT.finditer(text):  # only unindented lines: module level
            if match.group(3):
                imported.add(match.group(3))
            elif match.group(1):
                imported.add(match.group(1))
            else:
                imported.update(n.strip() for n in match.group(2).strip("()").split(","))
        return imported & set(MODULES)
    for node in ast.parse(text).body:
        nodes = [node]
        if isinstance(node, (ast.If, ast.Try)):  # platform and fallback switches
            nodes = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for item in nodes:
            if isinstance(item, ast.ImportFrom) and item.level == 1:
                if item.module:
                    imported.add(item.module.split(".")[0])
                else:
                    imported.update(alias.name for alias in item.names)
            elif isinstance(item, ast.ImportFrom) and item.module == "fastserver":
                imported.update(alias.name for alias in item.names)
            elif isinstance(item, ast.ImportFrom) and (item.module or "").startswith(
                    "fastserver."):
                imported.add(item.module.split(".")[1])
    return imported & set(MODULES)


def test_the_package_has_the_modules_these_tests_read():
    assert {"servers", "_seam", "_policy", "_cores", "_core", "_core_py"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_imports_alone_in_a_fresh_interpreter(name):
    if MODULES[name].endswith(".pyx") and "cython" not in fastserver._cores.CORES:
        pytest.skip(f"{name} is compiled, and this installation was built without extensions")
    module = "fastserver" if name == "__init__" else f"fastserver.{name}"
    result = subprocess.run([sys.executable, "-W", "error", "-c", f"import {module}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _cycle(graph):
    """A list of modules forming a circle in ``graph``, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for other in sorted(graph.get(node, ())):
            if state.get(other) == "open":
                return path[path.index(other):] + [other]
            if other not in state:
                found = visit(other, path + [other])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_no_import_circle():
    graph = {name: _top_level_imports(path) - {name} for name, path in MODULES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_api_reaches_the_cores_only_through_cores():
    for name in API:
        assert not _top_level_imports(MODULES[name]) & CORE_PARTS, name


def test_the_cores_never_import_the_api():
    for name in CORE_PARTS & set(MODULES):
        assert not _top_level_imports(MODULES[name]) & (API | {"__init__", "workers"}), name
        with open(MODULES[name], encoding="utf-8") as source:
            text = source.read()
        assert "_BaseServer__" not in text, name
        assert not re.search(r"fastserver\.(servers|mixins)|from \. import (servers|mixins)",
                             text), name


def test_only_servers_touches_base_server_private_names():
    for name, path in MODULES.items():
        with open(path, encoding="utf-8") as source:
            if name != "servers":
                assert "_BaseServer__" not in source.read(), name
