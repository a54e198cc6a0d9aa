"""A wake-up any thread or signal handler can give to a waiting loop."""

from __future__ import annotations

import contextlib
import os


class Waker:
    """A pipe a waiting loop watches beside its sockets (the self-pipe trick).

    :meth:`wake` only writes a byte, so it is safe from another thread and
    from a signal handler; a ``select`` on :attr:`fd` returns at once.
    """

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)

    def wake(self) -> None:
        """Make a current or the next wait on :attr:`fd` return at once."""
        if self._w < 0:
            return  # closed: nothing is waiting any more
        with contextlib.suppress(BlockingIOError):  # full of wake-ups already
            os.write(self._w, b"!")

    def clear(self) -> None:
        """Forget the wake-ups received so far."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.fd, 512):
                pass

    def close(self) -> None:
        """Release the pipe; later wake() calls do nothing."""
        fds, self.fd, self._w = (self.fd, self._w), -1, -1
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
