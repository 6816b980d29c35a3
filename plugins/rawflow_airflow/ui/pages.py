"""The HTML pages of the Rawflow view (server-rendered, so the matrix shows without any script)."""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from rawflow_airflow.ui import data
from rawflow_airflow.ui.auth import Reader
from rawflow_airflow.ui.sources import Sources, airflow_base_path

TEMPLATES = FsPath(__file__).with_name("templates")

router = APIRouter(include_in_schema=False)


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["bytes"] = human_bytes
    return templates


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    base = request.scope.get("root_path", "").rstrip("/")
    return templates.TemplateResponse(
        request, name, {"base": base, "airflow": airflow_base_path(), "page": name.removesuffix(".html"), **context}
    )


def _sources(request: Request) -> Sources:
    sources: Sources = request.app.state.sources
    return sources


@router.get("/", response_class=HTMLResponse)
def matrix_page(
    request: Request,
    _user: Reader,
    days: Annotated[int, Query(ge=1, le=data.MAX_DAYS)] = 7,
    data_type: Annotated[str | None, Query(alias="type", pattern="^(RAW|RTRAW)?$")] = None,
) -> HTMLResponse:
    matrix = data.matrix(_sources(request), days, data_type or None)
    return _render(request, "matrix.html", matrix=matrix, data_type=data_type or "")


@router.get("/blocks/{block}", response_class=HTMLResponse)
def block_page(
    request: Request,
    _user: Reader,
    block: Annotated[str, Path(pattern=r"^(RAW|RTRAW)-[0-9]{8}$")],
    problems_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    view = data.block(_sources(request), block, problems_only=problems_only, limit=limit, offset=offset)
    return _render(request, "block.html", view=view, problems_only=problems_only, limit=limit)


@router.get("/charts", response_class=HTMLResponse)
def charts_page(
    request: Request,
    _user: Reader,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24,
    bucket_minutes: Annotated[float, Query(ge=1, le=24 * 60)] = 10,
) -> HTMLResponse:
    return _render(request, "charts.html", hours=hours, bucket_minutes=bucket_minutes)


@router.get("/kafka", response_class=HTMLResponse)
def kafka_page(request: Request, _user: Reader) -> HTMLResponse:
    return _render(request, "kafka.html", kafka=data.kafka(_sources(request)))


@router.get("/processing", response_class=HTMLResponse)
def processing_page(
    request: Request, _user: Reader, days: Annotated[int, Query(ge=1, le=data.MAX_DAYS)] = 7
) -> HTMLResponse:
    return _render(request, "processing.html", status=data.processing(_sources(request), days), days=days)
