"""The web server of the inbox: aiohttp in the caller's event loop, serving the
single-page UI, the mailpit-compatible API and smtpwire's own endpoints, with
optional basic auth and headers that keep message content from running."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
from importlib import resources
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from . import _api, _api_faults, _api_own
from ._store import MessageStore

__all__ = ["WebInbox", "is_loopback"]

log = logging.getLogger("mail.log")


#: The UI's own pages may load only what this server serves; message HTML never
#: reaches them (it is framed from /api/smtpwire/message/{ID}/html, sandboxed).
UI_POLICY: Final = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)
STATIC_TYPES: Final = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
PLACEHOLDER: Final = (
    "<!doctype html><html><head><meta charset='utf-8'><title>smtpwire inbox</title></head>"
    "<body><h1>smtpwire inbox</h1><p>The web UI is not installed. The API is at "
    "<a href='/api/v1/messages'>/api/v1/messages</a>.</p></body></html>"
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _static_file(name: str) -> bytes | None:
    if "/" in name or "\\" in name or name.startswith("."):
        return None  # the UI is a flat directory: nothing else is reachable
    entry = resources.files(__package__).joinpath("static").joinpath(name)
    return entry.read_bytes() if entry.is_file() else None


async def index(request: web.Request) -> web.Response:
    page = _static_file("index.html")
    return web.Response(
        body=page or PLACEHOLDER.encode(), content_type="text/html", charset="utf-8"
    )


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content = _static_file(name)
    suffix = name[name.rfind(".") :] if "." in name else ""
    if content is None or suffix not in STATIC_TYPES:
        return _api.error(404, "no such file")
    return web.Response(body=content, content_type=STATIC_TYPES[suffix], charset="utf-8")


def _auth_middleware(user: str, password: str) -> Middleware:
    expected = f"{user}:{password}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        try:
            given = base64.b64decode(encoded, validate=True) if scheme.lower() == "basic" else b""
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(given, expected):
            return web.json_response(
                {"Error": "authentication required"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="smtpwire inbox", charset="UTF-8"'},
            )
        return await handler(request)

    return check


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as problem:
        # aiohttp's own 404/405 for unknown routes: JSON like every other error.
        if problem.status < 400:
            raise
        return _api.error(problem.status, problem.reason)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # A signal, not a middleware: streamed responses send their headers early.
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Content-Security-Policy", UI_POLICY)


def build_app(store: MessageStore, auth: tuple[str, str] | None = None) -> web.Application:
    middlewares: list[Middleware] = [_json_errors]
    if auth is not None:
        middlewares.insert(0, _auth_middleware(*auth))
    app = web.Application(middlewares=middlewares)
    app.on_response_prepare.append(_security_headers)
    app[_api.STORE] = store
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    _api.add_routes(app)
    _api_own.add_routes(app)
    _api_faults.add_routes(app)  # answers 404 unless app[_api_faults.FAULTS] is set
    return app


class WebInbox:
    """The web inbox on ``host:port`` in the running loop: ``await start()``, then
    ``url`` and ``port`` (the one bound, for port 0); ``await stop()``."""

    def __init__(
        self,
        store: MessageStore,
        host: str = "127.0.0.1",
        port: int = 8026,
        *,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.auth = auth
        self.app = build_app(store, auth)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if not is_loopback(self.host) and self.auth is None:
            log.warning(
                "The web inbox on %s has no password: anyone who can reach it reads the mail",
                self.host,
            )
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses  # the sockets' names: the port really bound
        if addresses:
            self.port = int(addresses[0][1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        # Event streams and waits end first: cleanup would otherwise wait for them.
        _api_own.end_streams(self.app)
        await runner.cleanup()
