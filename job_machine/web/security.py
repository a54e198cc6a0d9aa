"""What keeps the dashboard safe (docs/dashboard.md, "Safety"):

- who may see it: an access token (a login form, or ``Authorization:
  Bearer``) or HTTP basic credentials, compared in constant time;
- which POSTs are genuine: a random token per browser in a cookie that must
  come back in the form (double submit), else 403;
- what a browser may run: a Content-Security-Policy that allows our own
  static files only, no inline script or style, no framing;
- secrets kept out of pages and logs: :class:`Scrubber`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, urlencode

from psycopg.conninfo import conninfo_to_dict
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("job_machine.web")

#: The login session of token access: an HMAC of the token, never the token.
SESSION_COOKIE = "jm_session"
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
_SESSION_MESSAGE = b"job_machine web session"
_MAX_FLASH = 400


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the dashboard on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


class Scrubber:
    """Removes secrets (the DSN's password, the access token, the basic
    password) from text bound for a page, a log line or an error message."""

    def __init__(self, dsn: str, others: Iterable[str | None] = ()) -> None:
        found: list[str] = [o for o in others if o]
        try:
            password = conninfo_to_dict(dsn).get("password")
        except Exception:  # unparsable: treat the whole string as a secret
            password = dsn
        if password:
            found.append(str(password))
        forms = {f for s in found for f in (s, quote(s, safe=""), quote_plus(s))}
        # Longest first, so a secret that contains another goes whole.
        self._secrets = sorted((s for s in forms if s), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    def install(self, *logger_names: str) -> None:
        """Scrub every record those loggers, their handlers and the root
        logger's handlers emit."""
        for name in ("", *logger_names):
            target = logging.getLogger(name)
            target.addFilter(_ScrubFilter(self))
            for handler in target.handlers:
                handler.addFilter(_ScrubFilter(self))


class _ScrubFilter(logging.Filter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self._scrub = scrub

    def filter(self, record: logging.LogRecord) -> bool:
        # Each part on its own: formatters such as uvicorn's access log
        # unpack record.args, so they stay a tuple of the same length.
        if isinstance(record.msg, str):
            record.msg = self._scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: self._clean(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info))
        if record.exc_text:
            record.exc_text = self._scrub(record.exc_text)
        return True

    def _clean(self, value: object) -> object:
        if isinstance(value, str | bytes):
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            cleaned = self._scrub(text)
            if cleaned != text:
                return cleaned
            return value
        if isinstance(value, BaseException):
            text = str(value)
            return (
                value
                if self._scrub(text) == text
                else self._scrub(f"{type(value).__name__}: {text}")
            )
        return value


@dataclass(frozen=True)
class Access:
    """Who may use the dashboard: anyone who reaches it (no credentials
    configured), the holders of ``token``, and/or ``user``:``password``."""

    token: str | None = None
    user: str | None = None
    password: str | None = None
    #: Signs flash messages; new in every process.
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @property
    def required(self) -> bool:
        return bool(self.token or self.user)

    def session_value(self) -> str:
        """The session cookie's value after a login with the token."""
        assert self.token is not None
        return hmac.new(self.token.encode("utf-8"), _SESSION_MESSAGE, hashlib.sha256).hexdigest()

    def allows(self, conn: HTTPConnection) -> bool:
        """Whether the request carries valid credentials (or none are needed)."""
        if not self.required:
            return True
        scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if self.token:
            if scheme == "bearer" and same(credentials, self.token):
                return True
            if same(conn.cookies.get(SESSION_COOKIE), self.session_value()):
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
        if conn.scope.get("method") == "GET":
            here = conn.url.path + (f"?{conn.url.query}" if conn.url.query else "")
            return RedirectResponse(f"/login?{urlencode({'next': here})}", status_code=303)
        return PlainTextResponse("This dashboard needs its access token.", status_code=401)

    def flash_value(self, kind: str, text: str) -> str:
        """A flash message as a signed cookie value."""
        payload = base64.urlsafe_b64encode(
            json.dumps([kind, text[:_MAX_FLASH]]).encode("utf-8")
        ).decode("ascii")
        return f"{payload}.{self._sign(payload)}"

    def read_flash(self, value: str | None) -> tuple[str, str] | None:
        """The (kind, text) of a flash cookie this process signed, else None."""
        if not value or "." not in value:
            return None
        payload, _, signature = value.rpartition(".")
        if not same(signature, self._sign(payload)):
            return None
        try:
            kind, text = json.loads(base64.urlsafe_b64decode(payload))
        except (ValueError, binascii.Error):
            return None
        return str(kind), str(text)

    def _sign(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode("ascii"), hashlib.sha256).hexdigest()


def _valid_csrf(value: str | None) -> bool:
    return value is not None and 32 <= len(value) <= 64 and value.isascii()


class Guard:
    """ASGI middleware in front of every route: credentials, the CSRF
    cookie, security headers, and unexpected errors answered with a bare
    500 page and logged with secrets scrubbed."""

    def __init__(self, app: ASGIApp, access: Access, scrub: Scrubber) -> None:
        self.app = app
        self.access = access
        self.scrub = scrub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        csrf = conn.cookies.get(CSRF_COOKIE)
        new_csrf = not _valid_csrf(csrf)
        if new_csrf:
            csrf = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf"] = csrf
        static = scope["path"].startswith(_STATIC)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers.setdefault(name, value)
                if not static:
                    headers.setdefault("Cache-Control", "no-store")
                    if new_csrf:
                        headers.append("Set-Cookie", cookie(CSRF_COOKIE, str(csrf), conn))
            await send(message)

        public = static or scope["path"] == _LOGIN
        if not public and not self.access.allows(conn):
            await self.access.challenge(conn)(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.error(
                "error serving %s %s:\n%s",
                scope.get("method"),
                scope["path"],
                self.scrub(traceback.format_exc()),
            )
            if not started:
                page = PlainTextResponse("Internal error: see the dashboard's log.", 500)
                await page(scope, receive, send_with_headers)


def cookie(name: str, value: str, conn: HTTPConnection, max_age: int | None = None) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Strict, Secure over HTTPS."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if conn.url.scheme == "https":
        parts.append("Secure")
    return "; ".join(parts)
