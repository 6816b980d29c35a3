"""The JSON API under ``/rawflow/api`` (documented by the app's OpenAPI schema at ``/rawflow/openapi.json``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from rawflow_airflow.ui import data, schemas
from rawflow_airflow.ui.auth import Reader
from rawflow_airflow.ui.sources import Sources

router = APIRouter(prefix="/api", tags=["rawflow"])

BLOCK_NAME = Path(description="block name, e.g. RAW-20251101", pattern=r"^(RAW|RTRAW|ESD)-[0-9]{8}$")


def _sources(request: Request) -> Sources:
    sources: Sources = request.app.state.sources
    return sources


@router.get("/matrix", summary="Block × site status for the last N days")
def get_matrix(
    request: Request,
    _user: Reader,
    days: Annotated[int, Query(ge=1, le=data.MAX_DAYS)] = 7,
    data_type: Annotated[str | None, Query(alias="type", pattern="^(RAW|RTRAW|ESD)$")] = None,
) -> schemas.MatrixOut:
    return data.matrix(_sources(request), days, data_type)


@router.get("/blocks/{block}", summary="A block's files with their replica state per site")
def get_block(
    request: Request,
    _user: Reader,
    block: Annotated[str, BLOCK_NAME],
    problems_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
    search: Annotated[str | None, Query(max_length=255, description="LFNs containing this text")] = None,
    site: Annotated[str | None, Query(pattern=r"^[A-Z0-9][A-Z0-9_-]*$", description="problems at this site")] = None,
    failed_only: Annotated[bool, Query(description="only files with a bad replica")] = False,
) -> schemas.BlockOut:
    return data.block(
        _sources(request),
        block,
        problems_only=problems_only,
        limit=limit,
        offset=offset,
        search=search,
        site=site,
        failed_only=failed_only,
    )


@router.get(
    "/blocks/{block}/plan",
    summary="Dry run: what a block run started now would copy per site (files, bytes, sources, routes, duration)",
)
def get_block_plan(request: Request, _user: Reader, block: Annotated[str, BLOCK_NAME]) -> dict[str, Any]:
    return data.plan(_sources(request), block)


@router.get("/timeseries", summary="Throughput and error rate per site over time")
def get_timeseries(
    request: Request,
    _user: Reader,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24,
    bucket_minutes: Annotated[float, Query(ge=1, le=24 * 60)] = 60,
) -> schemas.SeriesOut:
    return data.series(_sources(request), hours, bucket_minutes)


@router.get("/kafka", summary="Receiver consumer lag per partition, broker reachability, quarantine counts")
def get_kafka(request: Request, _user: Reader) -> schemas.KafkaOut:
    return data.kafka(_sources(request))


@router.get("/processing", summary="Keep-up processing per block and run: files converted, jobs by state, DQM")
def get_processing(
    request: Request, _user: Reader, days: Annotated[int, Query(ge=1, le=data.MAX_DAYS)] = 7
) -> dict[str, Any]:
    return data.processing(_sources(request), days)


@router.get("/campaigns", summary="Production campaigns and analyses: status, files, processed %, jobs, failures")
def get_campaigns(request: Request, _user: Reader) -> list[dict[str, Any]]:
    return data.campaigns(_sources(request))
