"""The FastAPI application: sessions, templates, static files, error pages and the routes."""
from __future__ import annotations

import hashlib
from http import HTTPStatus
import secrets
from functools import lru_cache
from importlib import resources
from urllib.parse import quote

import plotly
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from backend.app.deps import LoginRequired, render
from backend.app.routes import api, auth, categories, docs, images, results, review, sound, units, users
from backend.config import Settings
from backend.db.models import ServerSecret
from backend.db.session import init_db, session_factory
from backend.db.store import seed_categories
from model.categories import load_categories

SESSION_COOKIE = "ambient_session"
SESSION_DAYS = 14
FRONTEND = resources.files("frontend")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app on `settings.database_url`, migrated to the current schema, categories seeded."""
    settings = settings or Settings()
    engine = init_db(settings.database_url)
    sessions = session_factory(engine)
    with sessions() as db:
        _seed_categories(db)
        secret_key = _server_secret(db, "session_key")

    # Swagger UI would load from a CDN: /docs is our own offline page over /openapi.json instead.
    app = FastAPI(title="Ambient", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Annotate the object-detector units of networks trained on ambient sound.")
    app.state.sessions = sessions
    app.state.templates = Jinja2Templates(directory=str(FRONTEND / "templates"))  # autoescapes .html
    app.add_middleware(SessionMiddleware, secret_key=secret_key, session_cookie=SESSION_COOKIE,
                       max_age=SESSION_DAYS * 24 * 3600, same_site="lax")

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js(request: Request) -> Response:
        script, etag = _plotly_js()
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(script, media_type="text/javascript",
                        headers={"ETag": etag, "Cache-Control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=str(FRONTEND / "static")), name="static")
    for module in (auth, units, images, sound, results, review, categories, users, api, docs):
        app.include_router(module.router)

    @app.exception_handler(LoginRequired)
    def login_required(request: Request, _exc: LoginRequired) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": "Log in first."}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return _error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
                             for e in exc.errors())
        if _wants_json(request):
            return JSONResponse({"detail": problems}, status_code=422)
        return _error_page(request, 422, problems)

    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", "")


def _error_page(request: Request, status: int, detail: str) -> Response:
    title = HTTPStatus(status).phrase
    return render(request, "error.html", user=None, status_code=status, status=status, title=title,
                  detail=detail)


def _seed_categories(db: Session) -> None:
    try:
        seed_categories(db, load_categories())
        db.commit()
    except IntegrityError:      # another worker seeded them at the same moment
        db.rollback()


def _server_secret(db: Session, name: str) -> str:
    """The named secret, made once and stored so every worker and restart signs cookies alike."""
    value = db.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    if value is None:
        db.add(ServerSecret(name=name, value=secrets.token_urlsafe(48)))
        try:
            db.commit()
        except IntegrityError:  # another worker made it first: use theirs
            db.rollback()
        value = db.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    return value


@lru_cache(maxsize=1)
def _plotly_js() -> tuple[str, str]:
    # plotly.js ships inside the plotly package: charts work with no internet.
    script = plotly.offline.get_plotlyjs()
    return script, f'"{hashlib.sha1(script.encode()).hexdigest()}"'
