"""The package's layout holds: packages import only from their own or lower layers, siblings
of one layer do not import each other, modules import one another without cycles, few modules
sit at the top, and every package folder is a package.

Every import statement counts, at module level or inside a function (also under
``TYPE_CHECKING``), as does ``importlib.import_module("c3d_extract...")``. ``from c3d_extract.x
import y`` imports the module ``c3d_extract.x.y`` when there is one; ``from c3d_extract import
name`` refers to the package root, which any module may import.
"""

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest

from tests.support.paths import ROOT

PACKAGE = "c3d_extract"
PACKAGE_DIR = ROOT / PACKAGE
TESTS_DIR = ROOT / "tests"
#: Files the tests read by path (tests/support/paths.py's DATA), not imported as modules.
TEST_DATA_DIR = TESTS_DIR / "data"

#: Low to high. A module imports from its own package or from a lower layer; packages of one
#: layer do not import each other. "foundation" is the package root, its top-level modules
#: (errors, atomic_files, hdf5_checks) and the data package; ``__main__`` sits with ``cli``.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("foundation",),
    ("device",),
    ("video",),
    ("models",),
    ("weights",),
    ("store",),
    ("datasets", "reports"),
    ("extraction",),
    ("train", "evaluation", "predict", "export"),
    ("cli",),
)
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}
FOUNDATION_PACKAGES = {"data"}
MAX_TOP_LEVEL_FILES = 5


@dataclass(frozen=True)
class Import:
    path: str      # the importing file, relative to the checkout
    line: int
    importer: str  # module names
    target: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.target}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package_dir: Path = PACKAGE_DIR) -> Dict[str, Path]:
    """Module name -> file, for every .py file of the package (a package is its __init__)."""
    return {module_name(path, package_dir.parent): path
            for path in sorted(package_dir.rglob("*.py")) if "__pycache__" not in path.parts}


def _is_package_name(name: Optional[str]) -> bool:
    return bool(name) and (name == PACKAGE or name.startswith(PACKAGE + "."))


def imports_in(source: str, importer: str, is_package: bool,
               modules: Set[str]) -> List[Tuple[int, str]]:
    """(line, imported module) for every import of a module of the package in ``source``."""
    seen: Set[Tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source)):
        found: List[str] = []
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names if _is_package_name(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:  # relative: from the importer's package, up level - 1
                parts = importer.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            if _is_package_name(base):
                found = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args
              and ast.unparse(node.func) in ("importlib.import_module", "import_module")
              and isinstance(node.args[0], ast.Constant)
              and _is_package_name(node.args[0].value)):
            found = [node.args[0].value]
        seen.update((node.lineno, target) for target in found)
    return sorted(seen)


def package_imports(package_dir: Path = PACKAGE_DIR) -> List[Import]:
    modules = package_modules(package_dir)
    result = []
    for name, path in modules.items():
        for line, target in imports_in(path.read_text(), name, path.name == "__init__.py",
                                       set(modules)):
            result.append(Import(str(path.relative_to(package_dir.parent)), line, name, target))
    return result


def unit(module: str) -> str:
    """The layer member a module belongs to: its subpackage, "foundation" or "cli"."""
    parts = module.split(".")
    if len(parts) == 1:
        return "foundation"
    if parts[1] == "__main__":
        return "cli"
    if parts[1] in FOUNDATION_PACKAGES or not (PACKAGE_DIR / parts[1]).is_dir():
        return "foundation"
    return parts[1]


def layer_violations(imports: Sequence[Import]) -> List[str]:
    """Imports of a package of a higher layer, or of one in no layer."""
    problems = []
    for imp in imports:
        source, target = unit(imp.importer), unit(imp.target)
        for member in (source, target):
            if member not in LEVEL:
                problems.append(f"{imp} ({PACKAGE}.{member} is in no layer)")
        if source in LEVEL and target in LEVEL and LEVEL[target] > LEVEL[source]:
            problems.append(f"{imp} ({source} imports {target}, a higher layer)")
    return problems


def sibling_violations(imports: Sequence[Import]) -> List[str]:
    """Imports between different packages of one layer."""
    return [f"{imp} ({unit(imp.importer)} imports its sibling {unit(imp.target)})"
            for imp in imports
            if unit(imp.importer) != unit(imp.target)
            and LEVEL.get(unit(imp.importer), -1) == LEVEL.get(unit(imp.target), -2)]


def strongly_connected(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's strongly connected components of ``graph``."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def a_cycle(graph: Dict[str, Set[str]], members: Sequence[str]) -> List[str]:
    """One shortest cycle through the first of ``members``, inside ``members``."""
    start, inside = members[0], set(members)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return paths[node] + [start]
            if nxt in inside and nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return list(members)


def cycle_violations(imports: Sequence[Import]) -> List[str]:
    """Each set of modules that import one another in a circle: one circle, then every import
    between the modules of the set."""
    graph: Dict[str, Set[str]] = defaultdict(set)
    for imp in imports:
        graph[imp.importer].add(imp.target)
    problems = []
    for members in strongly_connected(graph):
        if len(members) == 1 and members[0] not in graph[members[0]]:
            continue
        inside = [str(imp) for imp in imports
                  if imp.importer in members and imp.target in members]
        problems.append(f"cycle {' -> '.join(a_cycle(graph, members))}; the imports among "
                        f"{', '.join(members)}:\n      " + "\n      ".join(inside))
    return problems


def unknown_targets(imports: Sequence[Import], modules: Set[str]) -> List[str]:
    return [f"{imp} (no such module)" for imp in imports if imp.target not in modules]


def folders_without_init(root: Path, every_folder: bool, skip: Sequence[Path] = (),
                         base: Path = ROOT) -> List[str]:
    """Folders under ``root`` (itself included) without an __init__.py: every folder with
    ``every_folder``, else those that hold .py files; ``skip``'s trees left out."""
    if every_folder:
        folders = {root} | {path for path in root.rglob("*") if path.is_dir()}
    else:
        folders = {path.parent for path in root.rglob("*.py")}
    return [f"{folder.relative_to(base)}/ has no __init__.py" for folder in sorted(folders)
            if "__pycache__" not in folder.parts
            and not any(s == folder or s in folder.parents for s in skip)
            and not (folder / "__init__.py").exists()]


def report(title: str, problems: Sequence[str]) -> str:
    return f"{len(problems)} {title}:\n  " + "\n  ".join(problems)


@pytest.fixture(scope="module")
def imports():
    found = package_imports()
    assert len(found) > 100 and {imp.importer for imp in found} >= {
        f"{PACKAGE}.video.workers", f"{PACKAGE}.cli.extract"}, "the imports were not collected"
    return found


def test_every_package_is_in_a_layer():
    """Each subpackage of c3d_extract is placed in the layer order above."""
    packages = {unit(f"{PACKAGE}.{p.name}") for p in PACKAGE_DIR.iterdir()
                if p.is_dir() and p.name != "__pycache__"}
    assert packages - set(LEVEL) == set(), sorted(packages - set(LEVEL))


def test_no_module_imports_a_higher_layer(imports):
    """No module of the package imports a package of a higher layer."""
    problems = layer_violations(imports)
    assert not problems, report("imports of a higher layer", problems)


def test_packages_of_one_layer_do_not_import_each_other(imports):
    """train, evaluation, predict and export do not import one another; nor do datasets and
    reports."""
    problems = sibling_violations(imports)
    assert not problems, report("imports between sibling packages", problems)


def test_modules_import_one_another_without_cycles(imports):
    """The graph of imports between the package's modules has no cycle."""
    problems = cycle_violations(imports)
    assert not problems, report("import cycles", problems)


def test_every_imported_module_exists(imports):
    """Every imported c3d_extract module is a file of the package (a move left no stale
    import behind)."""
    problems = unknown_targets(imports, set(package_modules()))
    assert not problems, report("imports of missing modules", problems)


@pytest.mark.parametrize("folder", [PACKAGE_DIR, TESTS_DIR], ids=[PACKAGE, "tests"])
def test_few_modules_at_the_top(folder):
    """At most five .py files sit directly in c3d_extract/ (__init__ and __main__ included)
    and in tests/: the rest lives in the packages."""
    files = sorted(path.name for path in folder.glob("*.py"))
    assert len(files) <= MAX_TOP_LEVEL_FILES, f"{len(files)} .py files in {folder.name}/: {files}"


def test_every_package_folder_has_an_init():
    """Every folder of c3d_extract, and every folder of tests with .py files (but the data
    the tests read by path), is a package."""
    problems = (folders_without_init(PACKAGE_DIR, every_folder=True)
                + folders_without_init(TESTS_DIR, every_folder=False, skip=[TEST_DATA_DIR]))
    assert not problems, report("package folders without __init__.py", problems)


# ------------------------------------------------------------ the checks catch what they should

SAMPLE = '''
from typing import TYPE_CHECKING
import os
import c3d_extract.store.read
from c3d_extract import __version__
from c3d_extract.video import workers, DecodePool
from c3d_extract.errors import UsageError
if TYPE_CHECKING:
    from c3d_extract.models.c3d import C3D

def later():
    from c3d_extract.extraction.run import extract
    import importlib
    return importlib.import_module("c3d_extract.train.run")
'''
SAMPLE_MODULES = {"c3d_extract", "c3d_extract.store.read", "c3d_extract.video",
                  "c3d_extract.video.workers", "c3d_extract.errors", "c3d_extract.models.c3d",
                  "c3d_extract.extraction.run", "c3d_extract.train.run"}


def test_the_collector_finds_every_kind_of_import():
    """Module-level, function-level and TYPE_CHECKING imports, a module named in ``from x
    import``, the package root, and import_module with a literal name."""
    found = imports_in(SAMPLE, "c3d_extract.device.memory", False, SAMPLE_MODULES)
    assert found == [(4, "c3d_extract.store.read"), (5, "c3d_extract"),
                     (6, "c3d_extract.video"), (6, "c3d_extract.video.workers"),
                     (7, "c3d_extract.errors"), (9, "c3d_extract.models.c3d"),
                     (12, "c3d_extract.extraction.run"), (14, "c3d_extract.train.run")]


def test_relative_imports_are_resolved():
    """``from . import x`` and ``from ..x import y`` name the modules they import."""
    found = (imports_in("from . import decoders\nfrom ..store.read import x\n",
                        "c3d_extract.video.nvdec", False,
                        {"c3d_extract.video.decoders", "c3d_extract.store.read"}))
    assert found == [(1, "c3d_extract.video.decoders"), (2, "c3d_extract.store.read")]


def test_violations_are_reported():
    """A lower layer importing a higher one, siblings importing each other and a circle of
    three modules are each reported with the file and the imported module; the root is
    importable from anywhere."""
    imports = [Import("c3d_extract/video/a.py", 3, "c3d_extract.video.a", "c3d_extract.store.b"),
               Import("c3d_extract/train/c.py", 4, "c3d_extract.train.c",
                      "c3d_extract.evaluation.d"),
               Import("c3d_extract/store/b.py", 5, "c3d_extract.store.b", "c3d_extract"),
               Import("c3d_extract/cli/x.py", 1, "c3d_extract.cli.x", "c3d_extract.cli.y"),
               Import("c3d_extract/cli/y.py", 2, "c3d_extract.cli.y", "c3d_extract.cli.z"),
               Import("c3d_extract/cli/z.py", 3, "c3d_extract.cli.z", "c3d_extract.cli.x")]
    assert layer_violations(imports) == [
        "c3d_extract/video/a.py:3: c3d_extract.store.b (video imports store, a higher layer)"]
    assert sibling_violations(imports) == [
        "c3d_extract/train/c.py:4: c3d_extract.evaluation.d (train imports its sibling "
        "evaluation)"]
    assert cycle_violations(imports) == [
        "cycle c3d_extract.cli.x -> c3d_extract.cli.y -> c3d_extract.cli.z -> c3d_extract.cli.x; "
        "the imports among c3d_extract.cli.x, c3d_extract.cli.y, c3d_extract.cli.z:\n"
        "      c3d_extract/cli/x.py:1: c3d_extract.cli.y\n"
        "      c3d_extract/cli/y.py:2: c3d_extract.cli.z\n"
        "      c3d_extract/cli/z.py:3: c3d_extract.cli.x"]


def test_a_folder_without_init_is_reported(tmp_path):
    """A folder of .py files without __init__.py is reported, and so is an empty folder of
    the package."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "m.py").write_text("")
    (tmp_path / "pkg" / "empty").mkdir()
    assert folders_without_init(tmp_path / "pkg", every_folder=False, base=tmp_path) == [
        "pkg/sub/ has no __init__.py"]
    assert folders_without_init(tmp_path / "pkg", every_folder=True, base=tmp_path) == [
        "pkg/empty/ has no __init__.py", "pkg/sub/ has no __init__.py"]
