"""The packages' import rules (docs/architecture.md), read from the source with `ast` (no import runs).

`engine` imports nothing of `api` or `workers`; `workers` nothing of `api`; `api`'s HTTP modules
(everything in `api/` outside `api/cli/` and `api/localstack/`) neither the tooling (`api.cli`)
nor the local stack (`api.localstack`); `api.localstack` nothing of `api` outside itself.
Imports inside functions and under `TYPE_CHECKING` count too.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a source file of ours imports, by absolute name."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    return modules_imported_by(path.read_text(encoding="utf-8"), package)


def modules_imported_by(source: str, package: str) -> set[str]:
    """Every module `source` (in `package`) imports, by absolute name (`from api import cli` counts as `api.cli`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the file's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {module}"
            for path in files for module in sorted(imported_modules(path))
            if any(_within(module, package) for package in forbidden)]


def _http_modules() -> list[Path]:
    return [p for p in _sources("api") if not {"cli", "localstack"} & set(p.relative_to(ROOT / "api").parts[:1])]


def test_the_scanner_sees_imports_of_every_form() -> None:
    # Given imports in each form Python allows, one inside a function, one relative
    source = ("import api.cli\nfrom api import localstack\ndef f():\n    from workers import runtime\n"
              "from . import store\nfrom ..nodes import base\n")
    # Then each is seen by its absolute name
    assert {"api.cli", "api.localstack", "workers.runtime", "engine.models.store", "engine.nodes.base"} \
        <= modules_imported_by(source, "engine.models")
    # And in our own files too: a top-level and a function-local import of api/cli/up.py
    assert {"api.localstack.embedded", "engine.nodes.cgroup"} <= imported_modules(ROOT / "api" / "cli" / "up.py")


def test_engine_imports_nothing_of_api_or_workers() -> None:
    assert _violations(_sources("engine"), ("api", "workers")) == []


def test_workers_import_nothing_of_api() -> None:
    assert _violations(_sources("workers"), ("api",)) == []


def test_the_http_modules_import_neither_the_tooling_nor_the_local_stack() -> None:
    http = _http_modules()
    assert ROOT / "api" / "__init__.py" in http and ROOT / "api" / "runs.py" in http
    assert not any("cli" in p.parts or "localstack" in p.parts for p in http)
    assert _violations(http, ("api.cli", "api.localstack")) == []


def test_the_local_stack_imports_nothing_of_api_outside_itself() -> None:
    local = _sources("api/localstack")
    assert local, "api/localstack has no module"
    violations = [v for v in _violations(local, ("api",)) if not _within(v.rsplit(" ", 1)[1], "api.localstack")]
    assert violations == []
