"""Request dependencies: settings, the database session, the logged-in annotator, CSRF checks, blank
filters; page rendering, counts, figures, page links of long lists, and the annotation tasks' queue pages."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BeforeValidator, Field
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from sqlalchemy.orm import Session

from backend.app.auth import session_user
from backend.app.campaign import campaign_size, joinable_campaign, open_campaigns
from backend.app.reservations import Queue, current_reservation, held_for, hold_on, utcnow
from backend.app.tokens import bearer_token, token_user
from backend.app.security import CSRF_FIELD, CSRF_HEADER, csrf_matches, new_csrf_token
from backend.config import Settings
from backend.db.models import Annotator, Campaign, Unit


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_READ_METHODS = ("GET", "HEAD", "OPTIONS")
# POSTs that only compute (an image upload does not fit a GET) and change nothing stored: read scope may send them.
READ_ONLY_POSTS = frozenset({"/api/v1/runs/{run_id}/predict"})
SESSION_TOKEN = "sid"      # the cookie session's key for its login token (backend/app/auth.py)


class LoginRequired(Exception):
    """Raised for a request without a valid session; pages redirect to /login, the API answers 401."""


def _blank_is_none(value):
    return None if isinstance(value, str) and not value.strip() else value


# For a filter's query parameter: a form's empty box or "any" option (sent as "") means no filter, not a 422.
BlankIsNone = BeforeValidator(_blank_is_none)
# A share from 0 to 1, or None for a blank box (the bounds apply to the number only).
Share = Annotated[float, Field(ge=0.0, le=1.0)]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def _token_owner(request: Request, db: Session, token: str) -> Annotator:
    """The account of a request's bearer token (its scope kept on request.state); 401 for an unknown,
    revoked or expired token."""
    user, api_token = token_user(db, token)
    request.state.token_scope = api_token.scope
    route = request.scope.get("route")
    if api_token.scope == "read" and request.method not in _READ_METHODS \
            and getattr(route, "path", None) not in READ_ONLY_POSTS:
        raise HTTPException(403, "This token has read scope: it can only read (GET).")
    return user


def optional_user(request: Request, db: Session = Depends(get_db)) -> Annotator | None:
    token = bearer_token(request.headers.get("authorization"))
    if token is not None:      # a token request is the token's account only, whatever cookie comes with it
        return _token_owner(request, db, token)
    annotator_id = request.session.get("uid")
    if annotator_id is None:
        return None
    user = session_user(db, annotator_id, request.session.get(SESSION_TOKEN), get_settings(request))
    if user is None:          # logged out, expired, idle, password changed or account removed: the cookie is worthless
        request.session.clear()
    return user


def current_user(user: Annotator | None = Depends(optional_user)) -> Annotator:
    if user is None:
        raise LoginRequired()
    return user


def admin_user(request: Request, user: Annotator = Depends(current_user)) -> Annotator:
    if not user.is_admin:
        raise HTTPException(403, "This page is for admins only.")
    if getattr(request.state, "token_scope", "admin") != "admin":
        raise HTTPException(403, "This token has read scope: admin endpoints need an admin-scope token.")
    return user


def client_address(request: Request) -> str:
    """The client's address: the peer's, or for a trusted proxy the one it saw (backend/app/main.py TrustedProxies)."""
    return request.client.host if request.client else ""


def reauthenticated(request: Request, user: Annotator, password: str) -> bool:
    """Whether `password` is the acting user's own: asked before what a stolen session must not do alone
    (any new token, any change to an account, opening the results to annotators). A wrong one counts against
    this account from this address, never against the address alone (a shared one would lock out its other
    users)."""
    return request.app.state.login_guard.check_in_thread(user.password_hash, user.name, client_address(request),
                                                         password, reauth=True)


def no_store(response: Response) -> Response:
    """Keep a page that shows a new token or password out of every cache (browser history included)."""
    response.headers["Cache-Control"] = "no-store"
    return response


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use; every form carries it back."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = new_csrf_token()
    return token


def _check_token(request: Request, token: str) -> None:
    with request.app.state.sessions() as db:
        token_user(db, token)       # raises 401 for an unknown, revoked or expired token


async def check_csrf(request: Request) -> None:
    """Every state-changing request must echo the session's token (form field or header), but for one
    sent with a valid API token: it is authenticated by that header, which no other site can make a
    browser send, and never by the cookie."""
    token = bearer_token(request.headers.get("authorization"))
    if token is not None:
        return await run_in_threadpool(_check_token, request, token)
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(_FORM_TYPES):
        form = getattr(request.state, "form", None)     # an upload route's, parsed in memory (routes/listen.py)
        if form is None:
            try:
                await request.body()     # kept, so that a JSON route can still read its body after this parse
            except RuntimeError:         # "Stream consumed": the route's own form was parsed, and form() has it
                pass
            form = await request.form()
        given = form.get(CSRF_FIELD)
    if not csrf_matches(request.session.get("csrf"), given if isinstance(given, str) else None):
        raise HTTPException(403, "The form's security token is missing or stale: reload the page and try again.")


def render(request: Request, template: str, user: Annotator | None = None, status_code: int = 200,
           **context) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(
        request, template, {"user": user, "csrf_token": csrf_token(request),
                            "flash": request.session.pop("flash", None), **context},
        status_code=status_code)


def unit_name(layer: str, index: int) -> str:
    """The one name of a unit on every page: its layer and 0-based channel in it ("conv5 unit 194"), as the
    network, the run's files and the exports' `index_in_layer` count; the database id is only in URLs."""
    return f"{layer} unit {index}"


def named_unit(db: Session, unit_id: int) -> str:
    """`unit_name` of the unit with this database id, for messages."""
    unit = db.get(Unit, unit_id)
    return unit_name(unit.layer.name, unit.index)


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """'1 unit', '2 units' (pages have it as the `counted` filter: {{ n|counted("unit") }})."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def change(drop: float | None, spec: str = "+.4f", scale: float = 1.0) -> str:
    """A measured drop shown as the signed change it is (0.016 -> '-0.0160'; pages: {{ d|change }}), '?' where
    nothing measured it; a drop of exactly zero reads '+0.0000', not '-0.0000'."""
    return "?" if drop is None else format(0.0 - scale * drop, spec)


@dataclass(frozen=True)
class Pages:
    """Where a page of a long list is: items first..last (from 1) of total, and links to its neighbours
    (the same query, another offset), so that no page grows with the list."""

    offset: int
    limit: int
    total: int
    previous: str | None      # "?...&offset=..." of the page before, None on the first
    next: str | None

    @property
    def first(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last(self) -> int:
        return min(self.offset + self.limit, self.total)


def pages_of(request: Request, offset: int, limit: int, total: int) -> Pages:
    def link(to: int) -> str:
        return "?" + urlencode({**request.query_params, "offset": to})
    return Pages(offset, limit, total, link(max(0, offset - limit)) if offset > 0 else None,
                 link(offset + limit) if offset + limit < total else None)


def export_file_name(run_id: int, campaign: int | None, what: str) -> str:
    """An export's download name: run3_detectors.json, run3_campaign2_detectors.csv."""
    return f"run{run_id}" + (f"_campaign{campaign}" if campaign is not None else "") + f"_{what}"


def json_download(run_id: int, request: Request, response: Response, campaign: int | None = None) -> None:
    """A JSON export is a file to keep: the browser saves it instead of showing it."""
    name = export_file_name(run_id, campaign, request.url.path.rsplit("/", 1)[-1])
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'


def wants_html(request: Request) -> bool:
    """A browser's form post (it asks for HTML) gets a redirect; API clients get JSON."""
    return "text/html" in request.headers.get("accept", "")


def flash(request: Request, message: str) -> None:
    """A one-line message shown on the next page."""
    request.session["flash"] = message


def keep_withdrawn_answer(request: Request, task: str, unit_id: int, answer: dict) -> None:
    """Remember an answer undo took back, so that its unit's page comes back filled in with it."""
    request.session["withdrawn"] = {"task": task, "unit": unit_id, **answer}


def withdrawn_answer(request: Request, task: str, unit_id: int) -> dict | None:
    """The answer undo took back for this unit of this task, else None. It stays for reloads of the page:
    the next undo replaces it, and the unit is not handed to them again once they have answered it."""
    withdrawn = request.session.get("withdrawn")
    return withdrawn if withdrawn and withdrawn.get("task") == task and withdrawn.get("unit") == unit_id else None


async def form_fields(request: Request) -> FormData:
    """The parsed form, for routes whose field names vary (they stay sync: the database is blocking)."""
    return await request.form()


def figure_html(figure, **config) -> Markup:
    """A plotly figure as a placeholder that /static/charts.js draws: its data travels in an escaped
    attribute, so pages need no inline script (the Content-Security-Policy allows none)."""
    return Markup(f'<div class="plotly-figure" data-figure="{escape(figure.to_json())}" '
                  f'data-config="{escape(json.dumps({"responsive": True, **config}))}"></div>')


@dataclass(frozen=True)
class CampaignChoice:
    """An open campaign on a task's start page: what is left there for this annotator."""

    campaign: Campaign
    units_left: int | None        # None: not counted (the sound task's detectors are worked out on demand)
    size: int                     # the campaign's units


@dataclass(frozen=True)
class TaskPages:
    """The queue pages of one annotation task. GET `path` shows the unit held for the annotator, else a
    page listing the open campaigns they may join, each with a button that takes one of its units: only
    POSTs hand out units (a GET, which another site can make a browser send, changes nothing)."""

    queue: Queue
    path: str                                        # "/annotate": the queue
    unit_path: str                                   # "/units": a unit's page is unit_path/{id}
    # (db, annotator id, campaign, hold_minutes=...) -> a reservation, or None
    reserve: Callable[[Session, int, Campaign, int], object]
    can_undo: Callable[[Session, int, Settings], bool]   # (db, annotator id, settings): may they undo now
    undo_path: str                                   # POST: take back the annotator's latest answer
    start: dict[str, str]                            # queue_start.html: title, message, button, button_id
    empty: str                                       # what queue_empty.html says when nothing is left
    start_extra: Callable[[Session, int], dict] | None = None   # (db, annotator id) -> more for the start page
    units_left: Callable[[Session, int, Campaign], int] | None = None   # (db, annotator id, campaign)

    def choices(self, db: Session, user: Annotator) -> list[CampaignChoice]:
        return [CampaignChoice(c, self.units_left(db, user.id, c) if self.units_left else None, campaign_size(db, c))
                for c in open_campaigns(db, user)]

    def next_unit(self, request: Request, user: Annotator, db: Session, campaign: Campaign | None) -> Response:
        """Hand out the annotator's next unit of `campaign` (None: of the first open campaign with any left
        for them): its page, or the page saying nothing is left."""
        hold = get_settings(request).hold_idle_minutes
        for candidate in [campaign] if campaign is not None else open_campaigns(db, user):
            reservation = self.reserve(db, user.id, candidate, hold_minutes=hold)
            if reservation is not None:
                return RedirectResponse(f"{self.unit_path}/{reservation.unit_id}", status_code=303)
        others = [c for c in self.choices(db, user) if campaign is None or c.campaign.id != campaign.id]
        return render(request, "queue_empty.html", user=user, message=self.empty, campaign=campaign,
                      campaigns=[c for c in others if c.units_left != 0], action=self.path,
                      button_id=self.start["button_id"], can_undo=self.can_undo(db, user.id, get_settings(request)),
                      undo_path=self.undo_path)

    def held(self, request: Request, user: Annotator, db: Session, unit_id: int):
        """The user's live reservation of `unit_id`, held on for another idle spell (they are looking at it);
        None (with a message for the next page) when there is none: its page is not shown, so nobody works
        on a unit the queue did not hand them."""
        if db.get(Unit, unit_id) is None:
            raise HTTPException(404, f"There is no unit {unit_id}.")
        now = utcnow()
        held = held_for(db, self.queue, unit_id, user.id, now)
        if held is None:
            flash(request, f"Unit {unit_id} is not held for you: here is the queue.")
            return None
        hold_on(db, self.queue, user.id, now, get_settings(request).hold_idle_minutes)
        return held

    def add_routes(self, router: APIRouter) -> None:
        @router.get(self.path)
        def queue(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
            held = current_reservation(db, self.queue, user.id, utcnow())
            if held is not None:
                return RedirectResponse(f"{self.unit_path}/{held.unit_id}", status_code=303)
            extra = self.start_extra(db, user.id) if self.start_extra else {}
            return render(request, "queue_start.html", user=user, action=self.path, campaigns=self.choices(db, user),
                          **self.start, **extra)

        @router.post(self.path, dependencies=[Depends(check_csrf)])
        def take_next_unit(request: Request, campaign: int | None = Form(None), user: Annotator = Depends(current_user),
                           db: Session = Depends(get_db)):
            return self.next_unit(request, user, db, joinable_campaign(db, user, campaign) if campaign else None)

        @router.post(self.path + "/hold", dependencies=[Depends(check_csrf)])
        def hold_on_units(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
            """The unit page's heartbeat: the units held for this annotator stay theirs while the page is open."""
            now = utcnow()
            hold_on(db, self.queue, user.id, now, get_settings(request).hold_idle_minutes)
            held = current_reservation(db, self.queue, user.id, now)
            return {"held_until": held.expires_at.isoformat() if held else None}
