"""The domain package must stay Airflow-free, and DAG files must do no I/O at import."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import rawflow

REPO = Path(__file__).resolve().parents[2]


def test_rawflow_never_imports_airflow_statically() -> None:
    offenders = []
    for path in (REPO / "include" / "rawflow").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "airflow"]
    assert offenders == []


def test_importing_every_rawflow_module_loads_no_airflow() -> None:
    modules = [m.name for m in pkgutil.walk_packages(rawflow.__path__, "rawflow.") if not m.name.endswith("__main__")]
    assert len(modules) > 5
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO / "include")
    assert result.returncode == 0, result.stdout + result.stderr
