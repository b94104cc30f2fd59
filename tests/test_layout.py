"""The layout keeps data flowing one way: no import cycle between finetune's modules, counting imports
inside functions (which would otherwise hide one); and private means private: a ``_module`` is imported
only by the modules of its own package; and a module holds one concept, which keeps it short."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "finetune"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> list:
    """``(importer, imported module, line)`` for every import of every finetune module, inside functions too."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    found = []
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.append(sub if sub in files else module)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            found += [(name, t, node.lineno) for t in targets if t in files and t != name]
    return found


def _import_graph() -> dict:
    graph = {_module_name(p): set() for p in PACKAGE.rglob("*.py")}
    for importer, target, _ in _imports():
        graph[importer].add(target)
    return graph


def _owner(module: str):
    """The package a private module belongs to (``finetune.data`` for ``finetune.data._text``), else None."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def _cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_finds_imports_inside_functions():
    graph = _import_graph()
    assert "finetune.features._mop" in graph["finetune.features._registry"]
    assert "finetune.models._inference" in graph["finetune.models._io._modeldir"]


def test_no_import_cycles():
    cycle = _cycle(_import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_private_module_rule_reads_owners():
    assert _owner("finetune.data._text") == "finetune.data"
    assert _owner("finetune._commit") == "finetune"  # root helpers: importable anywhere inside finetune
    assert _owner("finetune.models.graph") is None
    assert _owner("finetune.models._io._modeldir") == "finetune.models"  # a private subpackage: its parent's
    assert _owner("finetune.models.caffe._proto") == "finetune.models.caffe"  # a public one keeps its own
    assert _owner("finetune.data") is None


def test_no_module_imports_another_packages_private_module():
    offenders = sorted({f"{importer}:{line} imports {target}" for importer, target, line in _imports()
                        if _owner(target) and not (importer + ".").startswith(_owner(target) + ".")})
    assert not offenders, ("private modules imported from outside their package (make the name public API "
                           "of that package, or move the code to a root-level helper):\n" + "\n".join(offenders))


#: A module that needs more lines than this holds more than one concept: cut it by concept.
MAX_MODULE_LINES = 400


def test_no_module_is_longer_than_one_concept_needs():
    long = sorted(f"{p.relative_to(PACKAGE.parent)}: {n} lines" for p in PACKAGE.rglob("*.py")
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES)
    assert not long, f"modules over {MAX_MODULE_LINES} lines (cut each by concept):\n" + "\n".join(long)
