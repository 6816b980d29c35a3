"""Parameter and multi-file sub-jobs: their parameters reach the job's command line and survive the jobs table
(an older table gets the column), each combination has its own outputs, later steps are not swept again."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from rawflow.naming import DataType
from rawflow.processing.campaign_round import campaign_output_lfn, parameters_tag, step_campaign
from rawflow.processing.campaigns import Campaign, Splitter, Step
from rawflow.processing.jobs import JobRecord, JobStore
from rawflow.processing.planning import PAYLOAD_VERSIONS, PlannedJob

RTRAW = "/juno/rtraw/2026/1121/JUNO.005021.Physics.Global.ds-0.20261121083000.{:05d}.rtraw"


def test_parameters_reach_the_command_line_before_the_files() -> None:
    job = PlannedJob(
        key="c.x.rec.abc",
        payload="rec",
        version=PAYLOAD_VERSIONS["rec"],
        inputs=(RTRAW.format(1), RTRAW.format(2)),
        outputs=("/juno/esd/2026/1121/a.esd", "/juno/esd/2026/1121/b.esd"),
        block_id="20261121",
        run=5021,
        parameters=(("seed", "7"), ("vertex_scale", "2.0")),
    )
    spec = job.spec(1, lambda lfn: f"root://t0{lfn}")
    assert spec.args == (
        "--param",
        "seed=7",
        "--param",
        "vertex_scale=2.0",
        f"@in:root://t0{RTRAW.format(1)}",
        f"@in:root://t0{RTRAW.format(2)}",
        "@out:root://t0/juno/esd/2026/1121/a.esd",
        "@out:root://t0/juno/esd/2026/1121/b.esd",
    )
    assert JobRecord.planned(job, "dirac").to_planned() == job


def test_each_combination_has_its_own_outputs() -> None:
    lfn = RTRAW.format(1)
    plain = campaign_output_lfn(lfn, DataType.ESD, "sweep")
    a = campaign_output_lfn(lfn, DataType.ESD, "sweep", {"seed": 7, "vertex_scale": 2.0})
    b = campaign_output_lfn(lfn, DataType.ESD, "sweep", {"vertex_scale": 2.0, "seed": 8})
    assert len({plain, a, b}) == 3 and parameters_tag({}) == ""
    assert a == campaign_output_lfn(lfn, DataType.ESD, "sweep", {"vertex_scale": "2.0", "seed": "7"})
    assert a.endswith(".esd") and "_sweep_p" in a


def test_the_sweep_is_the_first_steps_only() -> None:
    campaign = Campaign(
        name="mc",
        kind="mc",
        steps=(Step("conv", "raw2rtraw", DataType.RTRAW), Step("rec", "rec", DataType.ESD)),
        backend="dirac",
        splitter=Splitter(by="parameters", files_per_job=2, parameters={"seed": (1, 2, 3)}),
        output_data_type=DataType.ESD,
        destinations=("CNAF-STORM",),
    )
    assert step_campaign(campaign, 0) is campaign
    later = step_campaign(campaign, 1)
    assert (later.splitter.by, later.splitter.files_per_job, dict(later.splitter.parameters)) == ("files", 2, {})


def test_parameters_survive_the_jobs_table_and_an_older_table_gets_the_column(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    url = f"sqlite:///{db}"
    JobStore(url).close()
    with sqlite3.connect(db) as conn:  # the table as an older Rawflow made it
        conn.execute("ALTER TABLE processing_jobs DROP COLUMN parameters")
    store = JobStore(url)
    job = PlannedJob("c.x.rec.k1", "rec", PAYLOAD_VERSIONS["rec"], (RTRAW.format(1),), ("/o",), "20261121", 5021)
    swept = PlannedJob(
        "c.x.rec.k2", "rec", PAYLOAD_VERSIONS["rec"], (RTRAW.format(2),), ("/p",), "20261121", 5021, (("seed", "7"),)
    )
    store.upsert([JobRecord.planned(job, "dirac"), JobRecord.planned(swept, "dirac")])
    got = store.get(["c.x.rec.k1", "c.x.rec.k2"])
    assert got["c.x.rec.k1"].parameters == () and got["c.x.rec.k2"].parameters == (("seed", "7"),)
    assert got["c.x.rec.k2"].to_planned().spec(2, str).args[:2] == ("--param", "seed=7")
    assert got["c.x.rec.k2"].to_dict()["parameters"] == {"seed": "7"}
    store.close()


def test_an_analysis_writes_into_the_users_area() -> None:
    import pytest

    from rawflow.catalogue.base import FileRecord, validate_files
    from rawflow.errors import InvalidNameError
    from rawflow.naming import parse_lfn, split_user_lfn, user_lfn

    lfn = RTRAW.format(3)
    out = campaign_output_lfn(lfn, DataType.ESD, "vertex-study", user="alice")
    assert out == user_lfn("alice", "vertex-study", campaign_output_lfn(lfn, DataType.ESD, "vertex-study"))
    assert out.startswith("/juno/user/alice/vertex-study/esd/2026/1121/JUNO.005021.")
    standard = campaign_output_lfn(lfn, DataType.ESD, "vertex-study")
    assert split_user_lfn(out) == ("alice", "vertex-study", standard)
    assert parse_lfn(out).file.run_number == 5021 and parse_lfn(out).block_id == "20261121"
    record = FileRecord(out, 1, "00000001", DataType.ESD, "20261121", 5021, "Global", datetime.now(UTC))
    validate_files([record], 1024)  # the catalogue takes it
    for bad in ("/juno/user/alice/esd/2026/1121/x.esd", "/juno/user/../x/esd/2026/1121/x.esd"):
        with pytest.raises(InvalidNameError):
            validate_files(
                [FileRecord(bad, 1, "00000001", DataType.ESD, "20261121", 5021, "G", datetime.now(UTC))], 1024
            )
    with pytest.raises(InvalidNameError):
        user_lfn("..", "x", lfn)
