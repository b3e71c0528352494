"""The shape of the code: no import cycles, and the library stands without Hydra."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "procmem"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The procmem modules a module imports, anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # "from procmem.x import y" imports procmem.x, or the module procmem.x.y
            targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {target for target in targets if target in MODULES and target != name}
    return found


def cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """An import cycle through ``start``, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_there_are_no_import_cycles_inside_procmem():
    graph = {name: imports_of(name) for name in MODULES}
    # A package's __init__ importing its own modules is how a package exports them.
    graph = {name: {t for t in targets if not name or not t.startswith(f"{name}.")}
             for name, targets in graph.items()}
    cycles = [cycle for name in graph if (cycle := cycle_from(name, graph))]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_graph_finds_a_cycle_when_there_is_one():
    assert cycle_from("a", {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_from("a", {"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_only_the_app_imports_hydra():
    importers = [name for name, path in MODULES.items()
                 if "hydra" in {node.names[0].name.split(".")[0] if isinstance(node, ast.Import)
                                else (node.module or "").split(".")[0]
                                for node in ast.walk(ast.parse(path.read_text()))
                                if isinstance(node, ast.Import | ast.ImportFrom)}]
    assert importers and all(name.startswith("procmem.app") for name in importers), importers


BLOCK_HYDRA = """
import importlib, sys

class NoHydra:
    def find_spec(self, name, path=None, target=None):
        if name == "hydra" or name.startswith("hydra."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None

sys.meta_path.insert(0, NoHydra())
for name in sys.argv[1:]:
    importlib.import_module(name)
assert not any(m == "hydra" or m.startswith("hydra.") for m in sys.modules)
print("imported", len(sys.argv) - 1)
"""


def test_the_library_imports_with_hydra_unavailable():
    library = [name for name in MODULES if not name.startswith("procmem.app")]
    result = subprocess.run([sys.executable, "-c", BLOCK_HYDRA, *library], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"imported {len(library)}"
    blocked = subprocess.run([sys.executable, "-c", BLOCK_HYDRA, "procmem.app"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert "No module named 'hydra' (blocked)" in blocked.stderr  # the block does block


# The packages of the families' envs, algorithms, models and memory, and the modules of
# theirs the shared layers may name: the protocols.
FAMILY_PACKAGES = ("procmem.envs", "procmem.algorithms", "procmem.models", "procmem.skills")
PROTOCOLS = {"procmem.envs.protocols", "procmem.algorithms.protocols"}
SHARED = ("procmem.run", "procmem.app")


def family_modules_named_by(name: str) -> list[str]:
    return sorted(target for target in imports_of(name)
                  if target.startswith(FAMILY_PACKAGES) and target not in PROTOCOLS)


def test_the_run_layer_the_app_and_the_protocols_name_no_family():
    shared = [name for name in MODULES if name.startswith(SHARED) or name in PROTOCOLS]
    named = {name: family_modules_named_by(name) for name in shared}
    assert {name: modules for name, modules in named.items() if modules} == {}
    assert len(shared) > 20  # run/, app/ and both protocol modules were read


def test_the_family_rule_catches_a_shared_module_that_names_a_family():
    assert family_modules_named_by("procmem.algorithms.a2c")  # a family module names others
