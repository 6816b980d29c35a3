"""The FastAPI app of the Rawflow view; the Airflow plugin mounts it at ``/rawflow``.

Routes: the pages (``/``, ``/blocks/{block}``, ``/charts``, ``/kafka``), the JSON API (``/api/...``,
schema at ``/openapi.json``), Prometheus ``/metrics`` and static files. Plotly's JavaScript is served from
the installed ``plotly`` package (``plotly/package_data/plotly.min.js``): nothing is fetched from a CDN.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from rawflow.errors import NotFoundError, PermanentError, TransientError
from rawflow_airflow.ui import api, pages
from rawflow_airflow.ui.sources import Sources, airflow_base_path

STATIC = Path(__file__).with_name("static")


def plotly_js() -> Path:
    """plotly.min.js from the installed plotly package (pinned in requirements.txt)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed (pip install -r requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith(
        f"{request.scope.get('root_path', '')}/api"
    ) and "text/html" in request.headers.get("accept", "")


def create_app(sources: Sources | None = None) -> FastAPI:
    app = FastAPI(
        title="Rawflow monitoring",
        description=(
            "Shifters' view of Rawflow: block × site progress, file-level drill-down, throughput and error rate, "
            "Kafka consumer lag and the quarantine. Every /api call needs an Airflow JWT "
            "(Authorization: Bearer, from POST /auth/token, or the Airflow UI's _token cookie) of a user who may "
            "read DAGs: 401 without a valid token, 403 without that permission."
        ),
        version="1",
        docs_url=None,  # Swagger UI would load its assets from a CDN; the schema is at /openapi.json
        redoc_url=None,
    )
    app.state.sources = sources or Sources()
    app.state.templates = pages.make_templates()

    @app.exception_handler(HTTPException)
    async def denied_page(request: Request, exc: HTTPException) -> Response:
        if exc.status_code in (401, 403) and _wants_html(request):
            login = f"{airflow_base_path()}/auth/login?next={quote(str(request.url), safe='')}"
            templates = request.app.state.templates
            return templates.TemplateResponse(  # type: ignore[no-any-return]
                request,
                "denied.html",
                {
                    "base": request.scope.get("root_path", ""),
                    "status_code": exc.status_code,
                    "detail": exc.detail,
                    "login_url": login,
                },
                status_code=exc.status_code,
                headers=exc.headers,
            )
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter_page(request: Request, exc: RequestValidationError) -> Response:
        """A page asked with a bad parameter (a typed URL, an old link): a page saying which, not raw JSON."""
        if not _wants_html(request):
            return await request_validation_exception_handler(request, exc)
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path"))
            problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')} (got {error.get('input')!r})")
        templates = request.app.state.templates
        return templates.TemplateResponse(  # type: ignore[no-any-return]
            request,
            "problem.html",
            {**pages.page_context(request), "page": "problem", "problems": problems, "status_code": 422},
            status_code=422,
        )

    @app.exception_handler(TransientError)
    async def unavailable(_request: Request, exc: TransientError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(NotFoundError)
    async def no_such_thing(_request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(PermanentError)
    async def not_found(_request: Request, exc: PermanentError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.get("/metrics", include_in_schema=True, tags=["metrics"], summary="Prometheus metrics (no login)")
    def metrics(request: Request) -> Response:
        from rawflow_airflow.metrics import CONTENT_TYPE, exposition

        return Response(exposition(request.app.state.sources), media_type=CONTENT_TYPE)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    # check_dir=False: no file-system access while the plugin module is imported.
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)
    return app


app = create_app()
