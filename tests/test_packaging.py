"""The runtime install declares everything the code imports.

``pip install .`` (no extras) is what users run: a package that only arrives through a
test extra (or through another dependency that does not promise it) makes the suite
green while the product fails to start. This test reads every import statement of the
shipped packages (also those inside functions), maps each third-party module to the
distribution that provides it in this environment, and requires that distribution among
``gobi``'s declared runtime requirements.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The folders that install as gobi.* (pyproject.toml: package-dir).
SHIPPED = ["gobi", "fs", "server", "drivers"]

# Needed at run time but never imported by our code: a dependency enables a feature only
# when it can import this (so nothing breaks at import time; it breaks when used).
INDIRECT = {
    "jinja2": "sanic-ext turns on templating (the web page) only when it can import jinja2",
    "pydantic": "sanic-ext imports pydantic for its OpenAPI models without declaring it",
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_runtime() -> set[str]:
    """Distribution names of gobi's requirements that apply without any extra."""
    names = set()
    for req in md.requires("gobi") or []:
        if "extra ==" in req:
            continue
        names.add(_normalise(re.match(r"[A-Za-z0-9_.-]+", req).group(0)))
    return names


def imported_modules() -> dict[str, set[str]]:
    """Top-level third-party module name -> files of ours that import it."""
    found: dict[str, set[str]] = {}
    for folder in SHIPPED:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top == "gobi":
                        continue
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_import_is_a_declared_runtime_dependency():
    declared = declared_runtime()
    providers = md.packages_distributions()
    problems = []
    for module, files in sorted(imported_modules().items()):
        dists = {_normalise(d) for d in providers.get(module, [])}
        if not dists:
            problems.append(f"{module} (imported by {', '.join(sorted(files))}) is not installed")
        elif not dists & declared:
            problems.append(f"{module} (imported by {', '.join(sorted(files))}) comes from "
                            f"{'/'.join(sorted(dists))}, which pyproject.toml does not declare")
    assert not problems, "undeclared runtime imports:\n" + "\n".join(problems)


@pytest.mark.parametrize("module", sorted(INDIRECT))
def test_indirect_runtime_needs_are_declared(module):
    dists = {_normalise(d) for d in md.packages_distributions().get(module, [])}
    assert dists & declared_runtime(), (
        f"{module} must be a runtime dependency: {INDIRECT[module]}")


def test_the_scan_sees_imports_inside_functions():
    # fs/terminal.py imports rich only inside a method (so `gobi server` never loads it);
    # a scan of module-level imports would miss it.
    assert "fs/terminal.py" in imported_modules().get("rich", set())
