"""Half-open connections: the database's host vanishes from the network
without a word (packets dropped, no RST, no FIN), as when a NAT forgets the
flow or the server's machine loses power.

Real kernel networking, no mocks: a private PostgreSQL (tests/support/pgserver.py)
runs in a Linux network namespace of its own and listens on a veth address;
the workers in the test process reach it from the root namespace through the
veth pair. The cut is ``ip link set down`` on the namespace's end of the
pair: the workers' end loses its carrier and silently discards whatever the
workers send (a static ARP entry keeps even neighbour resolution from
hinting at it), the server sends nothing, so every open connection is left
half-open. The test first proves that with a plain TCP socket (still
ESTABLISHED, data unacknowledged and retransmitted, no reset), so that a pass
cannot come from a connection that was refused or reset.

The client that sends the task "meanwhile" reaches the server over its Unix
socket, which the cut does not touch: the client's network is fine, the
workers' is not, and the notification the send makes is lost with the
workers' listening connections. Needs root and iproute2 (``ip netns``); it
fails rather than skips without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import job_machine as jm
from job_machine.liveness import CLIENT_KEEPALIVES
from tests.support.pgserver import PgServer
from tests.support.procs import wait_until
from tests.support.workers import Base

#: The pinging workers' ``timeout``: after this long without a notification
#: they ping their listening connection, which then has data in flight.
PING_TIMEOUT = 3.0
#: The other workers keep the default ``timeout`` (30 s): only the TCP
#: keepalives of their idle connections can find the link dead in time.
DEFAULT_TIMEOUT = jm.Worker.timeout
#: Data in flight (a ping) is given up on after tcp_user_timeout.
USER_TIMEOUT = CLIENT_KEEPALIVES["tcp_user_timeout"] / 1000
#: An idle connection is probed after keepalives_idle, then every
#: keepalives_interval; unanswered, Linux drops it at the first probe sent
#: tcp_user_timeout or more after the last sign of life (5 + 2 * 3 = 11 s).
KEEPALIVE_DEATH = (
    CLIENT_KEEPALIVES["keepalives_idle"]
    + CLIENT_KEEPALIVES["keepalives_interval"] * CLIENT_KEEPALIVES["keepalives_count"]
)
#: Scheduling and timer slack allowed on top of the kernel's arithmetic.
SLACK = 5.0
#: Bounds on noticing the cut, counted from the cut: a pinging worker pings
#: within PING_TIMEOUT, then waits tcp_user_timeout; an idle one, the keepalives.
DETECT_WITHIN = {
    "ping": PING_TIMEOUT + USER_TIMEOUT + SLACK,
    "keepalive": KEEPALIVE_DEATH + SLACK,
}
#: Seconds from the network's return to the task sent meanwhile being done.
RECOVER_WITHIN = 10.0


# -- the network ---------------------------------------------------------------


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    return subprocess.run([ip, *args], capture_output=True, text=True, check=False)


def _ip_ok(*args: str) -> None:
    result = _ip(*args)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


#: The namespace end's MAC address (locally administered), for a static ARP entry.
PEER_MAC = "02:6a:6d:68:6f:02"


@dataclass
class Link:
    """A network namespace joined to ours by a veth pair, and a switch to cut it."""

    netns: str
    host_if: str  # our end, in the root namespace
    peer_if: str  # the namespace's end
    host_ip: str
    peer_ip: str

    def cut(self) -> None:
        """Packets vanish: our end loses its carrier and drops what we send,
        the namespace's end sends nothing. Nobody is told."""
        _ip_ok("-n", self.netns, "link", "set", "dev", self.peer_if, "down")

    def restore(self) -> None:
        _ip_ok("-n", self.netns, "link", "set", "dev", self.peer_if, "up")

    def remove(self) -> None:
        """Delete the namespace (and with it both ends of the pair)."""
        _ip("netns", "del", self.netns)
        if _ip("link", "show", "dev", self.host_if).returncode == 0:
            _ip("link", "del", "dev", self.host_if)


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root (this test is not skipped without them)")
    tag = os.getpid() % 1_000_000
    subnet = f"10.251.{os.getpid() % 250}"
    link = Link(f"jmho-{tag}", f"jmho{tag}h", f"jmho{tag}p", f"{subnet}.1", f"{subnet}.2")
    link.remove()  # left over from a run killed before its cleanup
    try:
        _ip_ok("netns", "add", link.netns)
        _ip_ok("link", "add", link.host_if, "type", "veth", "peer", "name", link.peer_if)
        _ip_ok("link", "set", "dev", link.peer_if, "netns", link.netns)
        _ip_ok("addr", "add", f"{link.host_ip}/24", "dev", link.host_if)
        _ip_ok("link", "set", "dev", link.host_if, "up")
        _ip_ok("-n", link.netns, "link", "set", "dev", link.peer_if, "address", PEER_MAC)
        _ip_ok("-n", link.netns, "addr", "add", f"{link.peer_ip}/24", "dev", link.peer_if)
        # No ARP: while cut, the next hop still "exists" for our kernel, as a
        # router beyond which packets vanish would; nothing hints at the loss.
        neigh = ["neigh", "replace", link.peer_ip, "lladdr", PEER_MAC, "nud", "permanent"]
        _ip_ok(*neigh, "dev", link.host_if)
        _ip_ok("-n", link.netns, "link", "set", "dev", link.peer_if, "up")
        _ip_ok("-n", link.netns, "link", "set", "dev", "lo", "up")
        yield link
    finally:
        link.remove()
    assert _ip("link", "show", "dev", link.host_if).returncode != 0, "veth pair left behind"


@dataclass
class Server:
    pg: PgServer
    local_dsn: str  # over the Unix socket, which the cut does not touch


@pytest.fixture
def server(link: Link, tmp_path: Path) -> Iterator[Server]:
    # A short path of its own: a socket path must fit in 107 bytes.
    sockdir = Path(tempfile.mkdtemp(prefix="jmho-"))
    sockdir.chmod(0o1777)  # the server may run as the service user
    pg: PgServer | None = None
    try:
        pg = PgServer.start_new(
            tmp_path,
            host=link.peer_ip,
            netns=link.netns,
            settings={"unix_socket_directories": f"'{sockdir}'"},
        )
        jm.install_schema(pg.dsn)
        yield Server(pg, f"host={sockdir} port={pg.port} user=postgres dbname=postgres")
    finally:
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(sockdir, ignore_errors=True)


# -- proving the link half-open ------------------------------------------------

_TCP_ESTABLISHED = 1


def _tcp_info(sock: socket.socket) -> tuple[int, int, int]:
    """(state, retransmits of the oldest unacknowledged segment, unacknowledged segments)."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    state, _ca_state, retransmits = raw[0], raw[1], raw[2]
    (unacked,) = struct.unpack_from("I", raw, 24)  # after 8 bytes of u8 and 4 u32
    return state, retransmits, unacked


def _half_open_canary(link: Link, port: int) -> Callable[[], str]:
    """Connect a bare socket now; the returned check, run after the cut,
    sends on it and proves that nothing comes back, not even a reset."""
    sock = socket.create_connection((link.peer_ip, port), timeout=5)

    def check() -> str:
        try:
            sock.sendall(b"\0\0\0\x08")  # the start of a startup packet: no answer due
            readable, _, _ = select.select([sock], [], [], 2.5)
            state, retransmits, unacked = _tcp_info(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            seen = f"state {state}, {retransmits} retransmits, {unacked} unacked, error {error}"
            assert not readable, f"the cut link answered (RST or FIN?): {seen}"
            assert (state, error) == (_TCP_ESTABLISHED, 0), seen
            assert unacked >= 1 and retransmits >= 1, f"nothing was lost: {seen}"
            return seen
        finally:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    return check


# -- the workers -----------------------------------------------------------------


class Timeline(logging.Handler):
    """The job_machine log records, stamped with time.monotonic()."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.lines.append((time.monotonic(), record.name, record.getMessage()))

    def first(self, since: float, logger: str, text: str, worker_id: int | None) -> float | None:
        with self._lock:
            for at, name, message in self.lines:
                if (
                    at >= since
                    and name == logger
                    and text in message
                    and f"worker {worker_id}:" in message
                ):
                    return at
        return None

    def dump(self, t0: float) -> str:
        with self._lock:
            return "\n".join(f"{at - t0:+8.2f} s {name}: {msg}" for at, name, msg in self.lines)


@pytest.fixture
def timeline() -> Iterator[Timeline]:
    handler = Timeline()
    logger = logging.getLogger("job_machine")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class SyncEcho(Base):
    def handle(self, task: jm.Task) -> None:
        self.reply({"echo": task.data, "at": time.monotonic()})


class AsyncEcho(jm.AsyncWorker):
    handle_signals = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ready = threading.Event()
        self.seen: list[jm.Task] = []
        # As tests/support/workers.py's Base counts them: the times it went
        # to sleep waiting for news, and that count when its last task began.
        self.idle_rounds = 0
        self.rounds_at_last_task = 0

    async def startup(self) -> None:
        self.ready.set()

    async def _next_wait(self) -> float:
        wait = await super()._next_wait()
        self.idle_rounds += 1
        return wait

    async def process(self, task: jm.Task) -> None:
        self.seen.append(task)
        self.rounds_at_last_task = self.idle_rounds
        await self.reply({"echo": task.data, "at": time.monotonic()})


@dataclass
class Running:
    worker: SyncEcho | AsyncEcho
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def run(self) -> None:
        try:
            if isinstance(self.worker, AsyncEcho):
                asyncio.run(self.worker.receive())
            else:
                self.worker.receive()
        except BaseException as ex:  # reported by the test thread
            self.errors.append(ex)


@contextlib.contextmanager
def running(*workers: SyncEcho | AsyncEcho) -> Iterator[list[Running]]:
    """Each worker's receive() in a thread of its own (asyncio.run for the async one)."""
    runs = [Running(w) for w in workers]
    for r in runs:
        r.thread = threading.Thread(target=r.run, name=f"worker-{type(r.worker).__name__}")
        r.thread.start()
    try:
        for r in runs:

            def started(r: Running = r) -> bool:
                assert not r.errors, r.errors
                return r.worker.ready.is_set()

            wait_until(started, 10, f"{r.worker} to start")
        yield runs
    finally:
        for r in runs:
            r.worker.stop()
        for r in runs:
            assert r.thread is not None
            r.thread.join(15)
        for r in runs:
            if r.errors:
                raise r.errors[0]
            assert r.thread is not None
            assert not r.thread.is_alive(), f"{r.worker}: receive() did not return after stop()"


# -- the test --------------------------------------------------------------------


def test_workers_notice_a_half_open_link_reconnect_and_take_the_task_sent_meanwhile(
    link: Link, server: Server, timeline: Timeline, record_property: Callable[[str, Any], None]
) -> None:
    """The network between four workers and the server is cut silently while
    they wait for work: a sync and an async worker that ping every
    PING_TIMEOUT seconds, and a sync and an async one with the default
    ``timeout`` (30 s), which only their connections' TCP keepalives can save.
    Each must notice within its bound (DETECT_WITHIN); once the network is
    back each reconnects, drains its queue and does the task that was sent
    while it was away (its notification went nowhere), within RECOVER_WITHIN."""
    backoff = {"reconnect_backoff": 0.5, "reconnect_backoff_cap": 2.0}  # default cap: 30 s
    workers: dict[str, SyncEcho | AsyncEcho] = {}
    for mode, timeout in (("ping", PING_TIMEOUT), ("keepalive", DEFAULT_TIMEOUT)):
        for kind, cls in (("sync", SyncEcho), ("async", AsyncEcho)):
            workers[f"{kind}/{mode}"] = cls(
                server.pg.dsn, queue=f"half.{kind}.{mode}", timeout=timeout, **backoff
            )
    t0 = time.monotonic()
    detected: dict[str, float] = {}
    done: dict[str, float] = {}
    report: list[str] = []

    def logs() -> str:
        return (
            "\n".join(report)
            + f"\n--- job_machine log (from the cut) ---\n{timeline.dump(t0)}"
            + f"\n--- server log ---\n{server.pg.log_tail(12)}"
        )

    with running(*workers.values()), jm.Client(server.local_dsn) as client:
        # All work before the cut, and their connections are idle again.
        for name, w in workers.items():
            tid = client.send({"before": name}, queue=w.queues[0])
            assert client.wait(tid, timeout=10)["echo"] == {"before": name}, logs()
        canary = _half_open_canary(link, server.pg.port)
        wait_until(
            lambda: all(
                w.idle_rounds > getattr(w, "rounds_at_last_task", 0) for w in workers.values()
            ),
            10,
            "every worker asleep again after its task",
        )

        t0 = time.monotonic()
        link.cut()
        report.append("+0.00 s: link cut (ip link set down at the server's end)")
        sent = {
            name: client.send({"meanwhile": name}, queue=w.queues[0]) for name, w in workers.items()
        }
        report.append(f"+{time.monotonic() - t0:.2f} s: tasks sent over the Unix socket: {sent}")
        report.append(f"a bare TCP connection after the cut: {canary()}")

        def all_detected() -> bool:
            for name, w in workers.items():
                at = timeline.first(t0, "job_machine.worker", "connection lost", w.worker_id)
                if at is not None and name not in detected:
                    detected[name] = at - t0
                    report.append(f"+{at - t0:.2f} s: {name} noticed the loss")
            return len(detected) == len(workers)

        try:
            with contextlib.suppress(AssertionError):  # the assert on `missing` tells more
                wait_until(
                    all_detected,
                    t0 + max(DETECT_WITHIN.values()) - time.monotonic(),
                    "every worker to notice the loss",
                    interval=0.05,
                )
            # Down a moment longer, so that the first reconnect attempts go
            # nowhere: this wait is the outage itself, not a wait for an event.
            time.sleep(1.0)
        finally:
            restored = time.monotonic()
            link.restore()
            report.append(f"+{restored - t0:.2f} s: link restored")

        missing = sorted(set(workers) - set(detected))
        assert not missing, f"{missing} never noticed the half-open link\n{logs()}"
        for name, w in workers.items():
            reply = client.wait(sent[name], timeout=RECOVER_WITHIN + 5)
            assert reply["echo"] == {"meanwhile": name}, logs()
            done[name] = reply["at"] - restored
            back = timeline.first(t0, "job_machine.worker", "reconnected", w.worker_id)
            report.append(
                f"{name}: the task sent meanwhile done {done[name]:.2f} s after the restore"
                + ("" if back is None else f" (reconnected at +{back - t0:.2f} s)")
            )
        for name, w in workers.items():
            assert [t.data for t in w.seen] == [{"before": name}, {"meanwhile": name}], logs()
            at = timeline.first(t0, "job_machine.liveness", "registry connection lost", w.worker_id)
            lost = "no loss logged" if at is None else f"lost at +{at - t0:.2f} s"
            report.append(f"{name}: registry session {lost}")

    text = logs()
    print(text)
    for name in workers:
        record_property(f"detect_{name}_s", round(detected[name], 2))
        record_property(f"recover_{name}_s", round(done[name], 2))
    for name in workers:
        bound = DETECT_WITHIN[name.split("/")[1]]
        assert detected[name] <= bound, f"{name} took longer than {bound:.0f} s\n{text}"
        assert done[name] <= RECOVER_WITHIN, text
