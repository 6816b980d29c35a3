"""The catalogue contract on the sql backend: embedded SQLite and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rawflow.catalogue import Catalogue, get_catalogue
from rawflow.catalogue.sql import SqlCatalogue
from tests.integration.catalogue_contract import CatalogueContract, make_record


class TestSqliteCatalogue(CatalogueContract):
    @pytest.fixture
    def catalogue(self, tmp_path: Path) -> Iterator[Catalogue]:
        catalogue = get_catalogue(f"sql+sqlite:///{tmp_path / 'catalogue.db'}")
        yield catalogue
        catalogue.close()


class TestPostgresCatalogue(CatalogueContract):
    @pytest.fixture
    def catalogue(self, pg_database: str) -> Iterator[Catalogue]:
        catalogue = get_catalogue("sql+" + pg_database)
        yield catalogue
        catalogue.close()


def test_create_schema_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first = SqlCatalogue(url)
    record = make_record(1)
    first.register_files([record], site="IHEP")
    first.create_schema()
    first.close()
    second = SqlCatalogue(url)
    second.create_schema()
    assert second.get_file(record.lfn) == record
    second.close()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    catalogue = SqlCatalogue(f"sql+sqlite:///{path}")
    catalogue.register_files([make_record(1)], site="IHEP")
    catalogue.close()
    assert path.read_bytes()[18:20] == b"\x02\x02"  # header bytes 18-19 = 2 mean WAL


def test_two_catalogues_on_one_postgres_database_agree(pg_database: str) -> None:
    writer, reader = SqlCatalogue(pg_database), SqlCatalogue(pg_database, create=False)
    try:
        records = [make_record(i) for i in range(3)]
        writer.register_files(records, site="IHEP")
        assert reader.get_files([r.lfn for r in records]) == {r.lfn: r for r in records}
        assert reader.register_files(records, site="IHEP").existing == [r.lfn for r in records]
    finally:
        writer.close()
        reader.close()
