"""DashboardConfig: how a dashboard runs (database, credentials, limits),
checked once when it is made."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from .security import SESSION_LIFETIME, host_key


@dataclass(frozen=True)
class DashboardConfig:
    """How a dashboard runs.

    ``dsn`` is the database. ``read_only`` hides every action and refuses
    action POSTs. ``token`` (a login form, or ``Authorization: Bearer``) or
    ``user`` and ``password`` (HTTP basic) make every page ask for
    credentials. Without either, a random token is made
    (``token_generated`` says so; :func:`job_machine.web.serve` prints the
    URL that logs in with it, and listens on the loopback only), unless
    ``no_auth``: no credentials at all, for anyone who reaches it.

    ``secret`` (16+ characters) signs the login sessions, CSRF tokens and
    flash messages, so that several dashboard processes behind one address
    accept each other's; without it a key new in every process signs them.
    A session lasts ``session_lifetime`` seconds from its login (12 hours);
    logging out refuses its cookie from then on in the process that served
    the logout (see docs/dashboard.md for several processes).

    ``refresh`` is the overview's
    auto-refresh period in seconds (0: off), ``page_size`` the tasks per
    page, ``scan`` the most tasks one page of a title search reads.

    ``allowed_hosts`` are the host names the dashboard answers to besides
    127.0.0.1, localhost and [::1] (and the address :func:`serve` listens
    on): the names browsers use to reach it, a reverse proxy's for one.
    A request for any other name is refused (400), so a site that rebinds
    its own name to this machine's address reads nothing.

    ``statement_timeout`` (seconds, 0: the server's setting) bounds each
    statement of the dashboard's connection; ``connection_wait`` is how
    long a request waits for that connection, busy with another request,
    before the answer is 503.

    The DSN, the token and the password stay out of ``repr()``.

    :raises ValueError: a short token, password or secret, a user without a
        password or the reverse, credentials with ``no_auth``, a malformed
        host name, a value out of range.
    """

    dsn: str = field(repr=False)
    read_only: bool = False
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    refresh: int = 5
    page_size: int = 50
    scan: int = 10_000
    allowed_hosts: tuple[str, ...] = ()
    statement_timeout: float = 10.0
    connection_wait: float = 5.0
    no_auth: bool = False
    secret: str | None = field(default=None, repr=False)
    session_lifetime: int = SESSION_LIFETIME
    token_generated: bool = False

    def __post_init__(self) -> None:
        self._check_access()
        if isinstance(self.allowed_hosts, str):
            raise ValueError("allowed_hosts is a sequence of host names, not one string")
        object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        for name in self.allowed_hosts:
            if not host_key(name):
                raise ValueError(f"{name!r} is not a host name (give a name or an IP address)")
        if not 0 <= self.statement_timeout <= 3600:
            raise ValueError(
                f"statement_timeout must be from 0 to 3600 seconds, not {self.statement_timeout}"
            )
        if not 0 < self.connection_wait <= 600:
            raise ValueError(
                f"connection_wait must be from over 0 to 600 seconds, not {self.connection_wait}"
            )
        if not 0 <= self.refresh <= 3600:
            raise ValueError(f"refresh must be from 0 to 3600 seconds, not {self.refresh}")
        if not 1 <= self.page_size <= 1000:
            raise ValueError(f"page_size must be from 1 to 1000, not {self.page_size}")
        if not self.page_size <= self.scan <= 1_000_000:
            raise ValueError(f"scan must be from page_size to 1000000, not {self.scan}")

    def _check_access(self) -> None:
        """Check the credentials, the secret and the session lifetime; make
        up a token when there are no credentials and not no_auth."""
        if self.token is not None and len(self.token) < 16:
            raise ValueError(
                "the access token must have at least 16 characters (make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        if (self.user is None) != (self.password is None) or self.user == "" or self.password == "":
            raise ValueError("basic authentication needs both a user name and a password")
        if self.no_auth and (self.token is not None or self.user is not None):
            raise ValueError("no_auth (--no-auth) and credentials exclude each other")
        if self.token is None and self.user is None and not self.no_auth:
            object.__setattr__(self, "token", secrets.token_urlsafe(32))
            object.__setattr__(self, "token_generated", True)
        if self.secret is not None and len(self.secret) < 16:
            raise ValueError(
                "the session secret must have at least 16 characters (make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        if not 60 <= self.session_lifetime <= 30 * 86400:
            raise ValueError(
                f"session_lifetime must be from 60 seconds to 30 days, not {self.session_lifetime}"
            )
        if self.user is not None and ":" in self.user:
            raise ValueError("the user name of basic authentication cannot contain ':'")
        if self.password is not None and len(self.password) < 12:
            raise ValueError(
                "the password of basic authentication must have at least 12 characters"
            )
