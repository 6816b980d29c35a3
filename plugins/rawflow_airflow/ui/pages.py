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

# Every page reloads itself (base.html) every ?refresh= seconds, so a shifter's open tab stays current.
RefreshSeconds = Annotated[int, Query(ge=5, le=3600, description="reload every N seconds")]


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


def page_context(request: Request) -> dict[str, Any]:
    """What every page shows in its header: when it was rendered (with the zone) and the receiving-day zone."""
    from datetime import UTC, datetime

    from rawflow_airflow.timetables import receiving_day_timezone

    return {
        "base": request.scope.get("root_path", "").rstrip("/"),
        "airflow": airflow_base_path(),
        "as_of": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        "zone": receiving_day_timezone(),
        "refresh_seconds": 0,  # every page passes its ?refresh=; only the bad-parameter page does not reload
    }


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request, name, {**page_context(request), "page": name.removesuffix(".html"), **context}
    )


def _sources(request: Request) -> Sources:
    sources: Sources = request.app.state.sources
    return sources


@router.get("/", response_class=HTMLResponse)
def matrix_page(
    request: Request,
    _user: Reader,
    days: Annotated[int, Query(ge=1, le=data.MAX_DAYS)] = 7,
    data_type: Annotated[str | None, Query(alias="type", pattern="^(RAW|RTRAW|ESD)?$")] = None,
    refresh: RefreshSeconds = 60,
) -> HTMLResponse:
    matrix = data.matrix(_sources(request), days, data_type or None)
    return _render(request, "matrix.html", matrix=matrix, data_type=data_type or "", refresh_seconds=refresh)


@router.get("/blocks/{block}", response_class=HTMLResponse)
def block_page(
    request: Request,
    _user: Reader,
    block: Annotated[str, Path(pattern=r"^(RAW|RTRAW|ESD)-[0-9]{8}$")],
    problems_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
    refresh: RefreshSeconds = 60,
    search: Annotated[str | None, Query(max_length=255)] = None,
    site: Annotated[str | None, Query(pattern=r"^([A-Z0-9][A-Z0-9_-]*)?$")] = None,
    failed_only: bool = False,
) -> HTMLResponse:
    sources = _sources(request)
    view = data.block(
        sources,
        block,
        problems_only=problems_only,
        limit=limit,
        offset=offset,
        search=search,
        site=site or None,
        failed_only=failed_only,
    )
    query = {
        k: v
        for k, v in {
            "problems_only": "true" if problems_only else None,
            "failed_only": "true" if failed_only else None,
            "search": search or None,
            "site": site or None,
            "limit": str(limit),
        }.items()
        if v
    }
    policy = sources.settings().policy
    # The block's type decides which sites keep what (ESD: its own shares, no tape).
    policy = policy.for_type(view.data_type) if policy is not None else None
    archive = policy.archive.name if policy and policy.to_tape else None

    def in_share(site: str, lfn: str) -> bool | None:
        """Whether the site should hold the file (None: the policy is unknown or the site is not in it)."""
        if policy is None or site not in policy.sites:
            return None
        target = policy.sites[site]
        return bool((target.archive and policy.to_tape) or target.keeps(lfn))

    return _render(
        request,
        "block.html",
        view=view,
        problems_only=problems_only,
        limit=limit,
        archive=archive,
        in_share=in_share,
        refresh_seconds=refresh,
        search=search or "",
        site=site or "",
        failed_only=failed_only,
        query=query,
    )


@router.get("/blocks/{block}/plan", response_class=HTMLResponse)
def plan_page(
    request: Request,
    _user: Reader,
    block: Annotated[str, Path(pattern=r"^(RAW|RTRAW|ESD)-[0-9]{8}$")],
    refresh: RefreshSeconds = 60,
) -> HTMLResponse:
    return _render(request, "plan.html", block=block, plan=data.plan(_sources(request), block), refresh_seconds=refresh)


@router.get("/charts", response_class=HTMLResponse)
def charts_page(
    request: Request,
    _user: Reader,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24,
    bucket_minutes: Annotated[float, Query(ge=1, le=24 * 60)] = 10,
    refresh: RefreshSeconds = 60,
) -> HTMLResponse:
    settings = _sources(request).settings()
    policy = settings.policy
    # Destinations and the archive in the policy's order: the same order (and colour) in every chart.
    sites = [s for s in settings.site_order if policy is None or not policy.sites[s].tier0]
    return _render(
        request, "charts.html", hours=hours, bucket_minutes=bucket_minutes, sites=sites, refresh_seconds=refresh
    )


@router.get("/kafka", response_class=HTMLResponse)
def kafka_page(
    request: Request,
    _user: Reader,
    refresh: RefreshSeconds = 30,
) -> HTMLResponse:
    return _render(request, "kafka.html", kafka=data.kafka(_sources(request)), refresh_seconds=refresh)


@router.get("/processing", response_class=HTMLResponse)
def processing_page(
    request: Request,
    _user: Reader,
    days: Annotated[int, Query(ge=1, le=data.MAX_DAYS)] = 7,
    refresh: RefreshSeconds = 60,
) -> HTMLResponse:
    status = data.processing(_sources(request), days)
    return _render(request, "processing.html", status=status, days=days, refresh_seconds=refresh)


@router.get("/campaigns", response_class=HTMLResponse)
def campaigns_page(
    request: Request,
    _user: Reader,
    name: str | None = None,
    refresh: RefreshSeconds = 60,
) -> HTMLResponse:
    rows = data.campaigns(_sources(request))
    chosen = next((r for r in rows if r["name"] == name), None) if name else None
    return _render(request, "campaigns.html", rows=rows, chosen=chosen, refresh_seconds=refresh)
