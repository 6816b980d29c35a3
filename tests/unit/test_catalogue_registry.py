"""get_catalogue: names and URLs to backends; the sql URL rules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rawflow.catalogue import Catalogue, get_catalogue
from rawflow.catalogue.sql import SqlCatalogue, engine_url
from rawflow.errors import PermanentError


@pytest.mark.parametrize("prefix", ["sql+sqlite:///", "sqlite:///"])
def test_sqlite_urls_give_the_sql_backend(tmp_path: Path, prefix: str) -> None:
    catalogue = get_catalogue(f"{prefix}{tmp_path / 'c.db'}")
    try:
        assert isinstance(catalogue, SqlCatalogue)
        assert isinstance(catalogue, Catalogue)
        assert (tmp_path / "c.db").exists()
    finally:
        catalogue.close()


def test_backend_by_name_with_options(tmp_path: Path) -> None:
    catalogue = get_catalogue("sql", url=f"sqlite:///{tmp_path / 'n.db'}")
    try:
        assert isinstance(catalogue, SqlCatalogue)
    finally:
        catalogue.close()


def test_sql_backend_does_not_import_rucio(tmp_path: Path) -> None:
    # A fresh interpreter: this test process may have imported rucio for other tests.
    probe = (
        "import sys\n"
        "from rawflow.catalogue import get_catalogue\n"
        f"get_catalogue('sqlite:///{tmp_path / 'c.db'}').close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rucio' or m.endswith('rucio_backend')))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=_env())
    assert done.stdout.strip() == "[]"


def _env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "include"), str(root)])}


@pytest.mark.parametrize(
    "url",
    ["nosuch", "ftp://host/x", "rucio://host", "mysql://u@h/db"],
)
def test_unknown_backends_and_urls_are_refused(url: str) -> None:
    with pytest.raises(PermanentError):
        get_catalogue(url)


def test_engine_url_rules() -> None:
    assert engine_url("sql+sqlite:////var/c.db") == "sqlite:////var/c.db"
    assert engine_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert engine_url("sql+postgresql://u@h:5/db").startswith(("postgresql+psycopg://", "postgresql+psycopg2://"))
    with pytest.raises(PermanentError):
        engine_url("not a url")
