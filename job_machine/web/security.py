"""What keeps the dashboard safe (docs/dashboard.md, "Safety"):

- which host names it answers to: the loopback names, the address it
  listens on and the names given (``--allowed-host``), never another, so a
  site that rebinds its own name to this machine reads nothing (DNS
  rebinding);
- who may see it: an access token (a login form, or ``Authorization:
  Bearer``) or HTTP basic credentials, compared in constant time, a failure
  answered after a delay; after a login, a session cookie that carries its
  issue time, signed, expires, and is refused once logged out;
- which POSTs are genuine: a token per browser, random and signed by this
  process, in a cookie that must come back in the form (double submit),
  else 403; and no POST that the browser says comes from another site
  (``Sec-Fetch-Site``, ``Origin``);
- how much a request may send: a body of at most :data:`MAX_BODY` bytes;
- what a browser may run: a Content-Security-Policy that allows our own
  static files only, no inline script or style, no framing;
- secrets kept out of pages and logs: :class:`Scrubber`;
- what reaches a terminal or a log: :func:`printable` removes control
  characters and terminal escapes from text a sender chose.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._printable import Lines, format_exception, printable
from .._scrub import Scrubber as Scrubber  # noqa: PLC0414 - re-exported, as it always was

logger = logging.getLogger("job_machine.web")

#: The login session of token access: its issue time and id, signed
#: (never the token itself).
SESSION_COOKIE = "jm_session"
#: How long a login session lasts, in seconds, unless configured: 12 hours.
SESSION_LIFETIME = 12 * 3600
#: The most logged-out sessions one process remembers until they expire;
#: beyond that it refuses every session issued until then (all log in again).
MAX_REVOKED = 10_000
#: Seconds an issue time may lie in the future (clocks of several processes).
_CLOCK_SKEW = 60
#: The anti-CSRF token of this browser; every form posts it back.
CSRF_COOKIE = "jm_csrf"
CSRF_FIELD = "csrf"
#: The message shown once after an action's redirect, signed by this process.
FLASH_COOKIE = "jm_flash"

#: Our own scripts and styles only: no inline script, no eval, no inline
#: style, no plugins, not framed, forms post back to us only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Served without credentials: the login form, and the static files it uses.
_LOGIN = "/login"
_STATIC = "/static/"
#: The Prometheus metrics (job_machine.metrics): a scraper without the token gets 401.
METRICS_PATH = "/metrics"
_KEY_MESSAGE = b"job_machine web key"
_MAX_FLASH = 400
#: The host names every dashboard answers to (``--allowed-host`` adds others).
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
#: The most bytes of body a request may send (a form is far smaller).
MAX_BODY = 64 * 1024
#: Seconds before answering a wrong token or password: slows guessing down.
FAILURE_DELAY = 0.5
#: What a POST may say of where it comes from in Sec-Fetch-Site.
_OWN_FETCH_SITES = ("same-origin", "none")
#: A Host header: a name or an IPv4 address, or an IPv6 address in brackets; a port.
_HOST = re.compile(r"(?:(?P<name>[a-z0-9_.-]+)|\[(?P<ipv6>[0-9a-f:.]+)\])(?::[0-9]{1,5})?")


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the dashboard on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_key(value: str) -> str:
    """A host name as the dashboard compares it, from a ``Host`` header or an
    allowed name: lower case, without a port or a final dot, an IPv6
    address in brackets and in its short form. "" when it is not a host name.
    """
    value = value.strip().lower()
    if value.count(":") > 1 and not value.startswith("["):  # a bare IPv6 address
        value = f"[{value}]"
    found = _HOST.fullmatch(value)
    if found is None:
        return ""
    if found["name"] is not None:
        return found["name"].rstrip(".")
    try:
        return f"[{ipaddress.IPv6Address(found['ipv6']).compressed}]"
    except ValueError:
        return ""


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, the port filled in."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return parts.scheme.lower(), host_key(parts.netloc.rpartition("@")[2]), port


def same(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a secret a request gave with the real one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def safe_next(target: str | None) -> str:
    """A local path to go on to after logging in: never another site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


@dataclass
class _Revoked:
    """The sessions logged out in this process, until they would expire
    anyway; and the issue time before which every session is refused
    (after more than MAX_REVOKED logouts in one session lifetime)."""

    ids: dict[str, float] = field(default_factory=dict)
    not_before: float = 0.0


@dataclass(frozen=True)
class Access:
    """Who may use the dashboard: anyone who reaches it (no credentials
    configured), the holders of ``token``, and/or ``user``:``password``.

    ``secret`` signs the session cookies, CSRF tokens and flash messages:
    given, several dashboard processes with the same secret (behind one
    address) accept each other's; else a key new in every process signs
    them, and a restart logs every browser out. A session lasts
    ``lifetime`` seconds from its login.
    """

    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    lifetime: int = SESSION_LIFETIME
    #: Signs sessions, CSRF tokens and flash messages: derived from
    #: ``secret``, else new in every process.
    key: bytes = field(default=b"", repr=False)
    _revoked: _Revoked = field(default_factory=_Revoked, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.key:
            key = (
                hmac.new(self.secret.encode("utf-8"), _KEY_MESSAGE, hashlib.sha256).digest()
                if self.secret
                else secrets.token_bytes(32)
            )
            object.__setattr__(self, "key", key)

    @property
    def required(self) -> bool:
        return bool(self.token or self.user)

    def _session_purpose(self) -> str:
        """Sessions are signed for this token: a new token ends every session."""
        assert self.token is not None
        return "session:" + hashlib.sha256(self.token.encode("utf-8")).hexdigest()

    def session_value(self, now: float | None = None) -> str:
        """A new session cookie's value, after a login with the token: its
        issue time and a random id, signed (never the token)."""
        issued = int(time.time() if now is None else now)
        return self._signed(self._session_purpose(), f"{issued}-{secrets.token_urlsafe(12)}")

    def _session(self, value: str | None, now: float | None = None) -> tuple[int, str] | None:
        """(issue time, id) of a session cookie that is valid now, else None:
        signed by us for the current token, not expired, not logged out."""
        if not self.token:
            return None
        payload = self._unsigned(self._session_purpose(), value)
        if payload is None:
            return None
        issued_text, _, session_id = payload.partition("-")
        if not issued_text.isdigit() or not session_id:
            return None
        issued = int(issued_text)
        now = time.time() if now is None else now
        if not now - self.lifetime < issued <= now + _CLOCK_SKEW:
            return None
        if issued < self._revoked.not_before or session_id in self._revoked.ids:
            return None
        return issued, session_id

    def valid_session(self, value: str | None, now: float | None = None) -> bool:
        """Whether ``value`` is a session cookie that lets its browser in now."""
        return self._session(value, now) is not None

    def revoke(self, value: str | None, now: float | None = None) -> None:
        """Log a session out in this process: a copy of its cookie is refused
        from now on, until it would have expired anyway. Beyond MAX_REVOKED
        at once, every session issued until now is refused instead."""
        found = self._session(value, now)
        if found is None:
            return
        issued, session_id = found
        now = time.time() if now is None else now
        revoked = self._revoked
        revoked.ids = {k: v for k, v in revoked.ids.items() if v > now}
        if len(revoked.ids) >= MAX_REVOKED:
            revoked.ids.clear()
            revoked.not_before = now + 1  # issue times are whole seconds
            return
        revoked.ids[session_id] = issued + self.lifetime

    def allows(self, conn: HTTPConnection) -> bool:
        """Whether the request carries valid credentials (or none are needed)."""
        if not self.required:
            return True
        scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if self.token:
            if scheme == "bearer" and same(credentials, self.token):
                return True
            if self.valid_session(conn.cookies.get(SESSION_COOKIE)):
                return True
        if self.user and self.password is not None and scheme == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
                user, sep, password = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            # Both compared, always: the time taken says nothing about which was wrong.
            return bool(sep) & same(user, self.user) & same(password, self.password)
        return False

    def challenge(self, conn: HTTPConnection) -> Response:
        """The answer to a request without valid credentials: the login form
        for a browser when a token is configured, else 401 asking for basic
        credentials."""
        if self.user:
            return PlainTextResponse(
                "This dashboard needs a user name and password.",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="job_machine", charset="UTF-8"'},
            )
        if conn.scope["path"] == METRICS_PATH:  # a scraper, not a browser: no login form
            return PlainTextResponse(
                "The metrics need the dashboard's access token (Authorization: Bearer).",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="job_machine"'},
            )
        if conn.scope.get("method") == "GET":
            here = conn.url.path + (f"?{conn.url.query}" if conn.url.query else "")
            return RedirectResponse(f"/login?{urlencode({'next': here})}", status_code=303)
        return PlainTextResponse("This dashboard needs its access token.", status_code=401)

    def new_csrf(self) -> str:
        """A new anti-CSRF token: random, and signed by this process, so a
        cookie planted by a neighbour (another port, a sibling subdomain)
        is not taken for ours."""
        return self._signed("csrf", secrets.token_urlsafe(24))

    def valid_csrf(self, value: str | None) -> bool:
        """Whether ``value`` is an anti-CSRF token this process made."""
        return self._unsigned("csrf", value) is not None

    def flash_value(self, kind: str, text: str) -> str:
        """A flash message as a signed cookie value."""
        payload = base64.urlsafe_b64encode(
            json.dumps([kind, text[:_MAX_FLASH]]).encode("utf-8")
        ).decode("ascii")
        return self._signed("flash", payload)

    def read_flash(self, value: str | None) -> tuple[str, str] | None:
        """The (kind, text) of a flash cookie this process signed, else None."""
        payload = self._unsigned("flash", value)
        if payload is None:
            return None
        try:
            kind, text = json.loads(base64.urlsafe_b64decode(payload))
        except (ValueError, binascii.Error):
            return None
        return str(kind), str(text)

    def _signed(self, purpose: str, payload: str) -> str:
        return f"{payload}.{self._sign(purpose, payload)}"

    def _unsigned(self, purpose: str, value: str | None) -> str | None:
        """The payload of ``value`` if this process signed it for ``purpose``."""
        if not value or not value.isascii() or "." not in value:
            return None
        payload, _, signature = value.rpartition(".")
        return payload if payload and same(signature, self._sign(purpose, payload)) else None

    def _sign(self, purpose: str, payload: str) -> str:
        message = f"{purpose}:{payload}".encode("ascii")
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()


class _TooLarge(Exception):
    """A request's body grew beyond MAX_BODY while the app read it."""


def log_failure(scrub: Scrubber, scope: Scope, exc: BaseException) -> None:
    """Log an unexpected error of a request, its traceback scrubbed."""
    logger.error(
        "error serving %s %s:\n%s",
        printable(str(scope.get("method"))),
        printable(str(scope.get("path"))),
        Lines(scrub(format_exception(exc))),
    )


class Guard:
    """ASGI middleware in front of every route: the host name, the size of
    the body, where a POST comes from, credentials, the CSRF cookie,
    security headers, and unexpected errors answered with a bare 500 page
    and logged with secrets scrubbed. Only HTTP gets through (and the
    lifespan): a websocket is refused."""

    def __init__(
        self,
        app: ASGIApp,
        access: Access,
        scrub: Scrubber,
        hosts: Iterable[str] = (),
        max_body: int = MAX_BODY,
    ) -> None:
        self.app = app
        self.access = access
        self.scrub = scrub
        self.hosts = frozenset(host_key(h) for h in (*LOCAL_HOSTS, *hosts)) - {""}
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # the dashboard has no websocket
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        conn = HTTPConnection(scope)
        static = scope["path"].startswith(_STATIC)
        started = False
        new_csrf: str | None = None

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers.setdefault(name, value)
                if not static:
                    headers.setdefault("Cache-Control", "no-store")
                    if new_csrf is not None:
                        headers.append("Set-Cookie", cookie(CSRF_COOKIE, new_csrf, conn))
            await send(message)

        refusal = self._refusal(conn)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        csrf = conn.cookies.get(CSRF_COOKIE)
        if not self.access.valid_csrf(csrf):
            csrf = new_csrf = self.access.new_csrf()
        scope.setdefault("state", {})["csrf"] = csrf

        public = static or scope["path"] == _LOGIN
        if not public and not self.access.allows(conn):
            if "authorization" in conn.headers:  # wrong credentials: slow guessing down
                await asyncio.sleep(FAILURE_DELAY)
            await self.access.challenge(conn)(scope, receive, send_with_headers)
            return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, receive_limited, send_with_headers)
        except _TooLarge:
            if not started:
                await self._too_large()(scope, receive, send_with_headers)
        except Exception as ex:
            log_failure(self.scrub, scope, ex)
            if not started:
                page = PlainTextResponse("Internal error: see the dashboard's log.", 500)
                await page(scope, receive, send_with_headers)

    def _refusal(self, conn: HTTPConnection) -> Response | None:
        """The answer to a request refused before it reaches a route: a host
        name not ours (400), a body too large (413), a POST from another
        site (403); None for the others."""
        host = conn.headers.get("host", "")
        if host_key(host) not in self.hosts:
            return PlainTextResponse(
                "This dashboard does not answer to that host name "
                "(job-machine web --allowed-host adds one).",
                status_code=400,
            )
        length = conn.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > self.max_body:
            return self._too_large()
        if conn.scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return None
        site = conn.headers.get("sec-fetch-site")
        origin = conn.headers.get("origin")
        own = _origin(f"{conn.scope['scheme']}://{host}")
        if (site is not None and site not in _OWN_FETCH_SITES) or (
            origin is not None and _origin(origin) != own
        ):
            return PlainTextResponse(
                "Refused: this request comes from another site.", status_code=403
            )
        return None

    def _too_large(self) -> Response:
        return PlainTextResponse(
            f"The request is too large: at most {self.max_body:,} bytes.", status_code=413
        )


def cookie(name: str, value: str, conn: HTTPConnection, max_age: int | None = None) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Strict, Secure over HTTPS."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if conn.url.scheme == "https":
        parts.append("Secure")
    return "; ".join(parts)
