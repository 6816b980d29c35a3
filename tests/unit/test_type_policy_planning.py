"""Per-data-type policy in planning and progress: ESD goes to CNAF-STORM (all) and IN2P3-DCACHE (1/2), never to
tape or JINR; RAW and RTRAW keep the sites' own shares and the archive (config/sites.yaml)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import pytest

from rawflow.catalogue import ReplicaInfo, ReplicaState
from rawflow.naming import DataType, RawFileName, derived_lfn, lfn_for
from rawflow.planning import ChunkKind, plan_block, targets
from rawflow.sites import SitesConfig, default_sites_path, load_sites
from rawflow.validation import block_progress
from tests.unit.test_planning import BLOCK, CNAF, IN2P3, JINR, T0, TAPE, File


@pytest.fixture(scope="module")
def sites() -> SitesConfig:
    return load_sites(default_sites_path())


def esd_files(n: int) -> list[File]:
    files = []
    for i in range(n):
        name = RawFileName.build(
            daq="Daq",
            run_number=1000,
            stream_type="Phy",
            stream_name="Main",
            file_tag="T",
            file_time=datetime(2025, 11, 1) + timedelta(seconds=i),
            file_sequence=i,
        ).name
        raw = lfn_for(DataType.RAW, date(2025, 11, 1), name)
        files.append(File(derived_lfn(derived_lfn(raw, DataType.RTRAW), DataType.ESD), 100 + i, f"{i:08x}"))
    return files


def at_tier0(files: list[File]) -> dict[str, dict[str, ReplicaInfo]]:
    return {f.lfn: {T0: ReplicaInfo(ReplicaState.VALIDATED, None, datetime(2025, 11, 1, tzinfo=UTC), 0)} for f in files}


def test_esd_targets_are_its_policy_sites_without_tape(sites: SitesConfig) -> None:
    assert [s.name for s in targets(sites, data_type="ESD")] == [CNAF, IN2P3]
    assert {s.name: s.share for s in targets(sites, data_type="ESD")} == {CNAF: 1, IN2P3: Fraction(1, 2)}
    for kind in ("RAW", "RTRAW"):
        assert [s.name for s in targets(sites, data_type=kind)] == [CNAF, JINR, IN2P3, TAPE]
    # The view is idempotent and refuses to be re-viewed as another type or written out as a policy file.
    view = sites.for_type(DataType.ESD)
    assert view.for_type("ESD") is view and not view.to_tape
    with pytest.raises(ValueError):
        view.for_type("RAW")
    with pytest.raises(ValueError):
        view.to_raw()


def test_esd_block_plan_goes_to_cnaf_all_and_in2p3_half_never_tape(sites: SitesConfig) -> None:
    files = esd_files(40)
    plan = plan_block(files, sites, at_tier0(files), data_type="ESD", block_id=BLOCK)
    assert [s.site for s in plan.sites] == [CNAF, IN2P3]
    assert all(s.kind is ChunkKind.REPLICATE for s in plan.sites)
    planned = {s.site: {lfn for c in s.chunks for lfn in c.lfns} for s in plan.sites}
    assert planned[CNAF] == {f.lfn for f in files}
    half = sites.for_type("ESD")[IN2P3]
    assert planned[IN2P3] == {f.lfn for f in files if half.keeps(f.lfn)}
    # Half by the deterministic crc32 rule: about 20 of 40, never all or none.
    assert 10 <= len(planned[IN2P3]) <= 30
    # RAW's 1/3 share at IN2P3 picks a different subset than ESD's 1/2 over the same names.
    third = sites[IN2P3]
    assert {f.lfn for f in files if third.keeps(f.lfn)} != planned[IN2P3]


def test_esd_progress_lists_only_its_real_targets(sites: SitesConfig) -> None:
    files = esd_files(10)
    progress = block_progress(sites, files, at_tier0(files), data_type="ESD")
    assert list(progress) == [CNAF, IN2P3]
    assert progress[CNAF].assigned == 10
    assert progress[IN2P3].assigned == sum(sites.for_type("ESD")[IN2P3].keeps(f.lfn) for f in files)
    raw_progress = block_progress(sites, files, at_tier0(files), data_type="RAW")
    assert list(raw_progress) == [CNAF, JINR, IN2P3, TAPE]
