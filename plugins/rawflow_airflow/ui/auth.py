"""Airflow's own login for the Rawflow view.

Airflow mounts plugin FastAPI apps without any protection, so every route here depends on
:func:`require_reader`: the caller presents the Airflow JWT (``Authorization: Bearer`` from API clients, or
the ``_token`` cookie the Airflow UI sets after login, which the browser sends to the view's iframe), the
configured auth manager validates it (signature, expiry, revocation) and builds the user, and the user must
be allowed to read DAGs — the view shows the block DAGs' progress. No token or an invalid or expired one →
401; a valid user without that permission → 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status

TOKEN_COOKIE = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()  # an explicit credential wins over the ambient cookie, as in Airflow
    return request.cookies.get(TOKEN_COOKIE) or None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def current_user(request: Request) -> Any:
    """The Airflow user of the request's JWT, validated by the configured auth manager."""
    from airflow.api_fastapi.app import get_auth_manager
    from jwt import InvalidTokenError

    token = _token(request)
    if not token:
        raise _unauthorized("Not authenticated: log into Airflow, or send Authorization: Bearer <Airflow JWT>")
    try:
        return await get_auth_manager().get_user_from_token(token)
    except InvalidTokenError as exc:  # bad signature, expired, revoked, malformed
        raise _unauthorized(f"Invalid Airflow token: {type(exc).__name__}")


def require_reader(user: Annotated[Any, Depends(current_user)]) -> Any:
    """The user, if the auth manager lets them read DAGs (viewer and above with the simple auth manager)."""
    from airflow.api_fastapi.app import get_auth_manager

    if not get_auth_manager().is_authorized_dag(method="GET", user=user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Forbidden: reading DAGs is required")
    return user


Reader = Annotated[Any, Depends(require_reader)]
