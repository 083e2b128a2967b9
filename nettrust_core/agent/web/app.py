"""The dashboard's routes: a few pages (one HTML shell, filled by static/app.js) and the JSON they
read, each a call to :mod:`..stats_view` or :mod:`..learn` over a read-only connection.

Pages: ``/`` (totals, plots over time, top names and clients), ``/log`` (the query log, following
new rows by polling ``/api/log?after=ID``), ``/hosts`` (granted hosts with time left), ``/refused``
(refused or would-refuse connection attempts), ``/why`` (why an address is open), ``/learn``
(the ``nettrust learn`` proposal).  Everything but ``/login`` and ``/static`` needs the password
(or ``auth = "proxy"``).
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ...errors import NetTrustError
from .. import stats_view as v
from ..learn import propose, to_toml
from .auth import COOKIE, Sessions, basic_password, verify_password

STATIC = Path(__file__).parent / "static"
PAGES = {"/": "overview", "/log": "log", "/hosts": "hosts", "/refused": "refused",
         "/why": "why", "/learn": "learn"}
#: Sent with every response: nothing from other hosts, no framing, no referrer.
HEADERS = {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                      "img-src 'self' data:; frame-ancestors 'none'",
           "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
MAX_ROWS = 1000


class WebError(NetTrustError, ValueError):
    pass


def create_app(database: str, *, password_hash: str | None, proxy: bool = False,
               clock=time.time) -> Starlette:
    """``password_hash`` None with ``proxy`` False refuses everyone (fail closed)."""
    sessions = Sessions(clock=clock)
    shell = (STATIC / "page.html").read_text()

    def authorized(request: Request) -> bool:
        if proxy:
            return True
        if sessions.valid(request.cookies.get(COOKIE)):
            return True
        password = basic_password(request.headers.get("authorization"))
        return bool(password and password_hash and verify_password(password, password_hash))

    def guarded(handler, page: bool):
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                if page:
                    return RedirectResponse("/login?next=" + quote(request.url.path), 303)
                return JSONResponse({"error": "login required"}, 401,
                                    headers={"WWW-Authenticate": 'Basic realm="nettrust"'})
            return await handler(request)
        return endpoint

    async def page(request: Request) -> Response:
        return HTMLResponse(shell.replace("{{page}}", PAGES[request.url.path]))

    def api(view):
        def read(params):                   # in a worker thread: sqlite stays in one thread
            try:
                conn = v.connect(database)
            except v.StatsError as exc:
                return JSONResponse({"error": str(exc)}, 503)
            try:
                return JSONResponse(view(conn, params))
            except (WebError, v.StatsError) as exc:
                return JSONResponse({"error": str(exc)}, 400)
            finally:
                conn.close()

        async def handler(request: Request) -> Response:
            return await run_in_threadpool(read, request.query_params)
        return handler

    async def login_page(request: Request) -> Response:
        html = (STATIC / "login.html").read_text()
        failed = "failed" in request.query_params
        target = request.query_params.get("next", "/")
        html = html.replace("{{next}}", target if target in PAGES else "/")
        return HTMLResponse(html.replace("{{error}}", "Wrong password." if failed else ""))

    async def login(request: Request) -> Response:
        form = parse_qs((await request.body())[:4096].decode(errors="replace"))
        password = (form.get("password") or [""])[0]
        target = (form.get("next") or ["/"])[0]
        target = target if target in PAGES else "/"
        if not (password_hash and verify_password(password, password_hash)):
            return RedirectResponse("/login?failed=1&next=" + quote(target), 303)
        response = RedirectResponse(target, 303)
        response.set_cookie(COOKIE, sessions.issue(), max_age=int(sessions.lifetime),
                            httponly=True, samesite="strict")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response

    routes: list[BaseRoute] = [Route(path, guarded(page, True)) for path in PAGES]
    routes += [Route(f"/api/{name}", guarded(api(view), False))
               for name, view in API.items()]
    routes += [Route("/favicon.ico", lambda request: RedirectResponse("/static/favicon.svg", 301)),
               Route("/login", login_page), Route("/login", login, methods=["POST"]),
               Route("/logout", logout), Mount("/static", StaticFiles(directory=STATIC))]
    app = Starlette(routes=routes)
    return _with_headers(app)


def _with_headers(app):
    async def wrapped(scope, receive, send):
        async def sending(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), val.encode()) for k, val in HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)
        await app(scope, receive, sending)
    return wrapped


# -- the JSON views: (read-only connection, query parameters) -> plain data ------------------

def _since(params, default: str = "24h") -> float:
    return v.since(params.get("since") or default)


def _int(params, name: str, default: int, high: int = MAX_ROWS) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise WebError(f"{name}: expected a whole number, not {text!r}")
    return min(int(text), high)


def _summary(conn, params):
    return v.summary(conn, _since(params))


def _top(conn, params):
    start, n = _since(params), _int(params, "limit", 10, 100)
    domains = v.top(conn, "domains", start, n * 3)
    return {"domains": domains[:n], "blocked": v.top(conn, "blocked", start, n),
            "clients": v.top(conn, "clients", start, n),
            "allowed": [r for r in domains if r["queries"] > (r["blocked"] or 0)][:n]}


def _log(conn, params):
    return v.log(conn, _int(params, "after", 0, 1 << 62), _int(params, "limit", 100))


def _timeline(conn, params):
    """Buckets over ``since`` (default 24h), starting no earlier than a minute before the first
    recorded query, so a young database is not a flat line with a spike at the end."""
    start = _since(params)
    first = conn.execute("SELECT MIN(ts) FROM queries").fetchone()[0]
    if first is not None:
        start = max(start, first - 60)
    span = max(60.0, time.time() - start)
    step = float(_int(params, "step", 0, 86400) or max(10, int(span / 120)))
    return v.timeline(conn, start, step)


def _granted(conn, params):
    return v.granted(conn, limit=_int(params, "limit", 500))


def _refused(conn, params):
    return v.refused(conn, _since(params), _int(params, "limit", 200))


def _why(conn, params):
    text = (params.get("address") or "").strip()
    try:
        address = str(ipaddress.ip_address(text))
    except ValueError:
        raise WebError(f"why: {text!r} is not an IP address") from None
    return v.why(conn, address, _since(params, "30d"))


def _learn(conn, params):
    proposal = propose(conn, _since(params, "7d"), _int(params, "siblings", 3, 100))
    return {**proposal.to_dict(), "toml": to_toml(proposal)}


API = {"summary": _summary, "top": _top, "log": _log, "timeline": _timeline,
       "granted": _granted, "refused": _refused, "why": _why, "learn": _learn}
