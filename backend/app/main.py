"""The FastAPI application: sessions, templates, static files, error pages and the routes."""
from __future__ import annotations

import errno
import hashlib
import logging
import re
from contextlib import AsyncExitStack, asynccontextmanager
from http import HTTPStatus
from functools import lru_cache
from importlib import resources
from urllib.parse import quote

import plotly
from jinja2 import pass_context
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from annotation.quality import DOUBTFUL_RULE
from backend.app.auth import LoginGuard
from backend.app.deps import LoginRequired, change, counted, optional_user, render, unit_name
from backend.app.errors import TaskError
from backend.app.gold import GOLD_KEY
from backend.app.listen import Listening
from backend.app.routes import (api, auth, campaign, categories, clusters, docs, explore, images, jobs, listen, representation,
                                results, review, sound, tokens, units, users)
from backend.app.security import server_secret
from backend.config import Settings
from backend.db.models import Annotator
from backend.db.session import open_db, session_factory
from backend.db.store import seed_categories
from backend.jobs import recover_orphans, worker_lifespan
from model.categories import load_categories

SESSION_COOKIE = "ambient_session"
# Scripts only from this site's files (no inline ones: an injected <script> does not run), never framed.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data: blob:; media-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CONTENT_SECURITY_POLICY.encode()), (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]
# The routes that take an image upload (backend/app/routes/listen.py): their body may be as large as
# `predict_max_upload_bytes` plus the multipart envelope; every other body stays under `max_request_bytes`.
UPLOAD_PATHS = re.compile(r"/runs/\d+/listen|/api/v1/runs/\d+/predict")
UPLOAD_OVERHEAD_BYTES = 64 * 1024
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
log = logging.getLogger("ambient")
FRONTEND = resources.files("frontend")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app on `settings.database_url`, migrated to the current schema, categories seeded."""
    settings = settings or Settings()
    engine = open_db(settings.database_url)
    sessions = session_factory(engine)
    with sessions() as db:
        _seed_categories(db)
        secret_key = server_secret(db, "session_key")
        server_secret(db, GOLD_KEY)     # made now, so that no queue request has to write it
        recover_orphans(db)     # jobs whose worker died while the server was down

    # Swagger UI would load from a CDN: /docs is our own offline page over /openapi.json instead.
    app = FastAPI(title="Ambient", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Annotate the object-detector units of networks trained on ambient sound.",
                  lifespan=_lifespan(settings))
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.login_guard = LoginGuard(settings)
    app.state.listening = Listening.of(settings, sessions)
    app.state.templates = Jinja2Templates(directory=str(FRONTEND / "templates"))  # autoescapes .html
    app.state.templates.env.globals["url_for"] = _path_for
    app.state.templates.env.filters["counted"] = counted
    app.state.templates.env.globals["unit_name"] = unit_name
    app.state.templates.env.globals["doubtful_rule"] = DOUBTFUL_RULE
    app.state.templates.env.filters["change"] = change
    app.add_middleware(SchemeSessions, secret_key=secret_key, session_cookie=SESSION_COOKIE,
                       max_age=settings.session_days * 24 * 3600, same_site="lax", always_secure=settings.secure_cookie)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes,
                       upload_bytes=settings.predict_max_upload_bytes + UPLOAD_OVERHEAD_BYTES)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(TrustedProxies, proxies=settings.trusted_proxies)    # outermost: the sessions see https

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js(request: Request) -> Response:
        script, etag = _plotly_js()
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(script, media_type="text/javascript",
                        headers={"ETag": etag, "Cache-Control": "public, max-age=86400"})

    # Browsers ask for /favicon.ico whatever the page links: the same file as /static/favicon.ico.
    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(str(FRONTEND / "static" / "favicon.ico"), media_type="image/x-icon",
                            headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=str(FRONTEND / "static")), name="static")
    for module in (auth, units, images, sound, results, review, campaign, categories, users, api, docs, clusters, jobs,
                   representation):
        app.include_router(module.router)
    app.include_router(jobs.api)
    app.include_router(api.campaigns_api)
    app.include_router(tokens.router)
    app.include_router(explore.pages)
    app.include_router(explore.api)
    app.include_router(explore.media)
    app.include_router(listen.pages)
    app.include_router(listen.api)

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

    # Services raise TaskError for a request they cannot honour: one place turns it into the answer.
    @app.exception_handler(TaskError)
    def task_error(request: Request, exc: TaskError) -> Response:
        return _error_response(request, exc.status, exc.message, exc.headers)

    # JSON nested a thousand deep overflows the parser's (or pydantic's) recursion: the body's fault.
    @app.exception_handler(RecursionError)
    def too_deep(request: Request, _exc: RecursionError) -> Response:
        return _error_response(request, 422, "The request body is nested too deeply.")

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
                             for e in exc.errors())
        if _wants_json(request):
            return JSONResponse({"detail": problems}, status_code=422)
        return _error_page(request, 422, problems)

    # A read-only or full disk must read as what it is, not as a bare 500 (see tests/test_hardening_faults.py).
    @app.exception_handler(OperationalError)
    def database_unavailable(request: Request, exc: OperationalError) -> Response:
        log.error("database error on %s %s: %s", request.method, request.url.path, exc.orig)
        return _error_response(request, 503, _storage_problem(str(exc.orig)))

    @app.exception_handler(OSError)
    def storage_error(request: Request, exc: OSError) -> Response:
        if exc.errno not in _STORAGE_ERRNOS:
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            return _error_response(request, 500, "Something went wrong on the server; it has been logged.")
        log.error("storage error on %s %s: %s", request.method, request.url.path, exc)
        return _error_response(request, 503, _storage_problem(exc.strerror or ""))

    # An id past SQLite's 64-bit integers (e.g. /images/99999999999999999999) fails in the driver:
    # no row can have it, so it is a 404 like any other unknown id.
    @app.exception_handler(OverflowError)
    def id_out_of_range(request: Request, _exc: OverflowError) -> Response:
        return _error_response(request, 404, "There is no such item: the number is out of range.")

    # PostgreSQL's INTEGER is 32-bit, so there /images/2147483648 already fails in the database
    # (SQLSTATE 22003, numeric value out of range): also a 404. Any other value the database refuses
    # (e.g. text too long for its column, which SQLite never checks) is the request's fault: a 422.
    @app.exception_handler(DataError)
    def value_out_of_range(request: Request, exc: DataError) -> Response:
        if getattr(exc.orig, "sqlstate", None) == "22003":
            return id_out_of_range(request, exc)
        log.warning("database refused a value on %s %s: %s", request.method, request.url.path, exc.orig)
        return _error_response(request, 422, "A value in the request does not fit the database.")

    @app.exception_handler(Exception)
    def unexpected_error(request: Request, _exc: Exception) -> Response:
        # Starlette logs the traceback on the server; the person sees a page, never the traceback.
        return _error_response(request, 500, "Something went wrong on the server; it has been logged.")

    return app


def _lifespan(settings: Settings):
    """The app's lifespan: the `ambient worker` beside it (``settings.start_worker``), and at shutdown the image
    decoders killed, so that a shutdown never waits on a decode."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncExitStack() as stack:
            stack.callback(app.state.listening.decoder.close)
            if settings.start_worker:
                await stack.enter_async_context(worker_lifespan(settings)(app))
            yield
    return lifespan


@pass_context
def _path_for(context, name: str, /, **path_params) -> str:
    # Starlette's url_for writes absolute URLs from the Host header: `Host: evil.example` would load
    # scripts from there. A path is all a page needs.
    return context["request"].app.url_path_for(name, **path_params)


class SchemeSessions:
    """Starlette's signed-cookie sessions, the cookie marked Secure on HTTPS requests (or always)."""

    def __init__(self, app: ASGIApp, always_secure: bool, **options):
        self.plain = SessionMiddleware(app, https_only=always_secure, **options)
        self.secure = SessionMiddleware(app, https_only=True, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = self.secure if scope.get("scheme") in ("https", "wss") else self.plain
        await chosen(scope, receive, send)


class TrustedProxies:
    """A request from one of `proxies` (","-separated addresses) gets the client address and scheme its
    X-Forwarded-For and X-Forwarded-Proto name: their last entries only, which the proxy itself wrote
    (the ones before are whatever the client sent). `ambient serve` turns uvicorn's own handling off:
    with FORWARDED_ALLOW_IPS=* it believes the first entry, which the client chooses."""

    def __init__(self, app: ASGIApp, proxies: str):
        self.app, self.proxies = app, {part.strip() for part in proxies.split(",") if part.strip()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client and client[0] in self.proxies:
            headers = dict(scope["headers"])
            forwarded_for = _last_entry(headers.get(b"x-forwarded-for"))
            proto = _last_entry(headers.get(b"x-forwarded-proto")).lower()
            scope = dict(scope)
            if forwarded_for:
                scope["client"] = (forwarded_for, 0)
            if proto in ("http", "https"):
                scope["scheme"] = ("wss" if proto == "https" else "ws") if scope["type"] == "websocket" else proto
        await self.app(scope, receive, send)


def _last_entry(header: bytes | None) -> str:
    return header.decode("latin-1").rsplit(",", 1)[-1].strip() if header else ""


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """Answers 413 to a request body over `max_bytes` (`upload_bytes` for an image upload, UPLOAD_PATHS): by
    its Content-Length, or while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int):
        self.app, self.max_bytes, self.upload_bytes = app, max_bytes, upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.upload_bytes if UPLOAD_PATHS.fullmatch(scope["path"]) else self.max_bytes
        detail = f"The request body is over the {limit // 1024} KiB limit."
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            return await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:   # chunked, no Content-Length: stop reading here
                raise StarletteHTTPException(413, detail)
            return message

        await self.app(scope, counted, send)


def _storage_problem(message: str) -> str:
    lowered = message.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return "The database is read-only, so nothing can be saved right now. Tell an admin; your work so far is kept."
    if "full" in lowered or "no space" in lowered or "quota" in lowered:
        return "The server's disk is full, so nothing can be saved right now. Tell an admin; your work so far is kept."
    if "locked" in lowered or "busy" in lowered:
        return "The database is busy; try again in a moment."
    return "The database cannot be reached right now. Tell an admin; try again later."


def _error_response(request: Request, status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    response = (JSONResponse({"detail": detail}, status_code=status) if _wants_json(request)
                else _error_page(request, status, detail))
    response.headers.update(headers or {})
    return response


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", "")


def _error_page(request: Request, status: int, detail: str) -> Response:
    title = HTTPStatus(status).phrase
    # A server-side failure (the database down or busy) does not ask the database again for the navigation.
    user = _page_user(request) if status < 500 else None
    return render(request, "error.html", user=user, status_code=status, status=status, title=title, detail=detail)


def _page_user(request: Request) -> Annotator | None:
    """The logged-in account, so that an error page keeps its navigation; None when there is none or it
    cannot be told (no session yet, the database down)."""
    if "session" not in request.scope or "uid" not in request.session:
        return None
    try:
        with request.app.state.sessions() as db:
            return optional_user(request, db)
    except (SQLAlchemyError, StarletteHTTPException):
        return None


def _seed_categories(db: Session) -> None:
    try:
        seed_categories(db, load_categories())
        db.commit()
    except IntegrityError:      # another worker seeded them at the same moment
        db.rollback()


@lru_cache(maxsize=1)
def _plotly_js() -> tuple[str, str]:
    # plotly.js ships inside the plotly package: charts work with no internet.
    script = plotly.offline.get_plotlyjs()
    return script, f'"{hashlib.sha1(script.encode()).hexdigest()}"'
