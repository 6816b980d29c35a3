"""The catalogue contract on the rucio backend, against a real Rucio 41.5.1 server (one per session; a fresh
scope per test keeps tests apart)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from rucio.client import Client

from rawflow.catalogue import Catalogue, ReplicaState, get_catalogue
from rawflow.catalogue.rucio_backend import RucioCatalogue
from rawflow.grid.rucio_server import RucioServer
from rawflow.naming import DataType
from tests.integration.catalogue_contract import DAY1, CatalogueContract, make_record


def _fresh_scope() -> str:
    return "t" + uuid.uuid4().hex[:12]


class TestRucioCatalogue(CatalogueContract):
    @pytest.fixture
    def catalogue(self, rucio_server: RucioServer) -> Iterator[Catalogue]:
        catalogue = get_catalogue("rucio", scope=_fresh_scope(), **rucio_server.client_options())
        yield catalogue
        catalogue.close()


@pytest.fixture
def rucio_catalogue(rucio_server: RucioServer) -> Iterator[RucioCatalogue]:
    catalogue = RucioCatalogue(scope=_fresh_scope(), **rucio_server.client_options())
    yield catalogue
    catalogue.close()


@pytest.fixture
def plain_client(rucio_server: RucioServer, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(
        rucio_host=rucio_server.url,
        auth_host=rucio_server.url,
        account=rucio_server.account,
        auth_type="userpass",
        creds={"username": rucio_server.username, "password": rucio_server.password},
    )


def test_rucio_sees_blocks_datasets_replicas_and_metadata(
    rucio_catalogue: RucioCatalogue, plain_client: Client
) -> None:
    scope = rucio_catalogue.scope
    records = [make_record(i) for i in range(3)]
    rucio_catalogue.register_files(records, site="IHEP")
    rucio_catalogue.set_replica_state([records[0].lfn], "CNAF", ReplicaState.COPYING)
    rucio_catalogue.set_replica_state([records[1].lfn], "CNAF", ReplicaState.BAD, error="adler32 differs")

    assert [c["name"] for c in plain_client.list_content(scope, "RAW-202511")] == ["RAW-20251101"]
    assert sorted(f["name"] for f in plain_client.list_files(scope, "RAW-20251101")) == sorted(r.lfn for r in records)
    meta = plain_client.get_metadata(scope, records[0].lfn, plugin="JSON")
    assert (meta["Block"], meta["Type"], meta["Run"], meta["Stream"]) == (DAY1, "RAW", 1234, "Physics")
    dids = [{"scope": scope, "name": r.lfn} for r in records]
    states = {r["name"]: r["states"] for r in plain_client.list_replicas(dids, all_states=True)}
    assert states[records[0].lfn] == {"IHEP": "AVAILABLE", "CNAF": "COPYING"}
    assert states[records[1].lfn] == {"IHEP": "AVAILABLE", "CNAF": "BAD"}
    assert states[records[2].lfn] == {"IHEP": "AVAILABLE"}
    rucio_catalogue.close_block(DataType.RAW, DAY1)
    assert plain_client.get_metadata(scope, "RAW-20251101")["is_open"] is False


def test_rucio_url_form(rucio_server: RucioServer) -> None:
    options = rucio_server.client_options()
    host = options.pop("host")
    catalogue = get_catalogue("rucio+" + host, scope=_fresh_scope(), **options)
    try:
        record = make_record(1)
        assert catalogue.register_files([record], site="IHEP").added == [record.lfn]
    finally:
        catalogue.close()
