"""The house's shape, kept by tests: imports that run one way, a node side on the standard
library alone, rooms of a readable size, and docs that name only modules that exist."""

import ast
import graphlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = PROJECT_ROOT / "xray_pipeline"
# the fleet's node side: it ships as one file and runs on a node's own python3
NODE_SIDE = ("xray_pipeline.core.fleet.shipper", "xray_pipeline.core.fleet.backlog")


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The project's modules that `name` imports, at the top or inside a function."""
    found = set()
    path = MODULES[name]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


def graph() -> dict[str, set[str]]:
    return {name: imports_of(name) for name in MODULES}


def test_no_module_import_circle():
    try:
        graphlib.TopologicalSorter(graph()).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"modules import each other: {' -> '.join(exc.args[1])}")


def test_core_packages_import_one_way():
    def package(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:3]) if parts[1:2] == ["core"] else ".".join(parts[:2])

    packages: dict[str, set[str]] = {}
    for name, targets in graph().items():
        packages.setdefault(package(name), set()).update(
            package(t) for t in targets if package(t) != package(name)
        )
    try:
        graphlib.TopologicalSorter(packages).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"packages import each other: {' -> '.join(exc.args[1])}")


def test_core_and_the_api_do_not_import_dagster_and_core_not_fastapi():
    for name in MODULES:
        if name.startswith(("xray_pipeline.core", "xray_pipeline.api")):
            text = MODULES[name].read_text(encoding="utf-8")
            assert not re.search(r"^\s*(import|from) dagster", text, re.M), name
        if name.startswith("xray_pipeline.core"):
            assert not re.search(r"^\s*(import|from) fastapi", text, re.M), name


def test_the_node_side_imports_the_standard_library_alone():
    """Imported with no site-packages at all (`-I -S`): what it loads is the standard library
    and the project's own modules, which must be standard-library only too."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        + "; ".join(f"import {m}" for m in NODE_SIDE)
        + "; print('\\n'.join(sorted(m for m in sys.modules "
        "if m.split('.')[0] not in (*sys.stdlib_module_names, '__main__'))))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(PROJECT_ROOT)],
        capture_output=True, text=True, cwd="/",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.split()
    assert loaded and all(m.startswith("xray_pipeline") for m in loaded), loaded
    for name in loaded:
        assert name in MODULES, name


@pytest.mark.parametrize("limit", [420])
def test_modules_and_folders_stay_small(limit: int):
    long = {n: c for n, p in MODULES.items() if (c := len(p.read_text().splitlines())) > limit}
    assert not long, f"modules past {limit} lines: split them along their seams: {long}"
    folders: dict[Path, int] = {}
    for path in MODULES.values():
        if path.name != "__init__.py":
            folders[path.parent] = folders.get(path.parent, 0) + 1
    crowded = {str(f.relative_to(PROJECT_ROOT)): n for f, n in folders.items() if n > 15}
    assert not crowded, f"folders of more than 15 modules: {crowded}"


DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
PATH_IN_DOCS = re.compile(r"(?<![/\w])((?:core|defs|api|cli|settings)/[\w/]*?[\w]+(?:\.py|/))")
DOTTED_IN_DOCS = re.compile(r"\bxray_pipeline(?:\.\w+)+")


def test_docs_name_only_modules_that_exist():
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in PATH_IN_DOCS.finditer(text):
            if not (PACKAGE / match.group(1)).exists():
                missing.append(f"{doc.name}: {match.group(1)}")
        for match in DOTTED_IN_DOCS.finditer(text):
            dotted = match.group(0)
            if dotted not in MODULES and dotted.rsplit(".", 1)[0] not in MODULES:
                missing.append(f"{doc.name}: {dotted}")
    assert not missing, "the docs name modules that do not exist: " + "; ".join(missing)


def test_the_code_map_names_every_core_package():
    text = (PROJECT_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for init in (PACKAGE / "core").glob("*/__init__.py"):
        assert f"core/{init.parent.name}/" in text, (
            f"docs/architecture.md: core/{init.parent.name}/"
        )


def test_no_router_of_the_api_imports_another():
    routers = {n for n in MODULES if n.startswith("xray_pipeline.api.routers.")}
    for name in routers:
        assert not imports_of(name) & routers, f"{name} imports a router: share via api/queries"
