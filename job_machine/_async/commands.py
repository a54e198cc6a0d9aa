"""The commands room: what an operator tells a running worker, and live tuning.

Two ways in, both from the worker's registry thread (``liveness.py``):

- a command left for this worker in the registry (``Admin.stop_workers``),
  of which only ``"stop"`` exists (:meth:`AsyncCommands.from_registry`);
- a command of ``Admin.broadcast`` with its JSON args
  (:meth:`AsyncCommands.handle`): a handler registered with the worker's
  ``on_command`` wins, else a built-in one (``concurrency``, ``status``,
  ``stop``); an unknown one is logged and ignored.

A new concurrency is only noted here (any thread may ask for it); the serving
loop applies it at its next turn (:meth:`AsyncCommands.apply_concurrency`),
growing the worker's own pool first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _codec
from .._worker_config import WorkerConfig

if TYPE_CHECKING:
    from .worker import AsyncWorker

logger = logging.getLogger("job_machine.worker")

#: A command's handler: called with the command's args (a JSON value).
Handler = Callable[[Any], object]


class AsyncCommands:
    """The commands of one worker (see the module's docstring)."""

    def __init__(self, worker: AsyncWorker) -> None:
        self._worker = worker
        #: Handlers of the commands of Admin.broadcast, by name (on_command).
        self.handlers: dict[str, Handler] = {}
        #: A concurrency asked for by a command, applied by the serving loop.
        self.wanted_concurrency: int | None = None

    def register(self, name: str) -> Callable[[Handler], Handler]:
        """What registers a handler of ``name`` (the worker's ``on_command``).

        :raises ValueError: ``name`` is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a command name is a non-empty string, not {name!r}")

        def register(fn: Handler) -> Handler:
            self.handlers[name] = fn
            return fn

        return register

    def handle(self, name: str, args: Any) -> None:
        """Dispatch a broadcast command: its handler, else a built-in one."""
        worker = self._worker
        handler = self.handlers.get(name)
        if handler is not None:
            handler(args)
        elif name == "concurrency":
            try:
                worker.set_concurrency(args)
            except ValueError as ex:
                logger.warning("worker %s: command concurrency: %s", worker.worker_id, ex)
        elif name == "status":
            logger.info("worker %s: status %s", worker.worker_id, _codec.encode(worker.status()))
        elif name == "stop":
            self.from_registry("stop")
        else:
            logger.warning("worker %s: unknown command %r ignored", worker.worker_id, name)

    def from_registry(self, command: str) -> None:
        """A command an operator left for this worker in the registry."""
        worker = self._worker
        if command == "stop":
            if not worker._stopper.stopping:
                logger.info(
                    "worker %s: asked to stop; finishing the task in hand", worker.worker_id
                )
            worker.stop()
        else:
            logger.warning("worker %s: unknown command %r ignored", worker.worker_id, command)

    def want_concurrency(self, concurrency: int) -> None:
        """Note ``concurrency`` for the serving loop's next turn, and wake it.

        :raises ValueError: not a whole number >= 1, or above 1 for a worker
            that runs its tasks one by one.
        """
        wanted = WorkerConfig.check("concurrency", concurrency)
        if wanted > 1 and not self._worker._slotted:
            raise ValueError(
                f"concurrency {wanted} refused: this worker was started with concurrency 1 "
                "and runs its tasks one by one; start it with more to change it while it runs"
            )
        self.wanted_concurrency = wanted
        self._worker._wake()

    def status(self) -> dict[str, Any]:
        """What the worker is doing now (the worker's ``status()``)."""
        worker = self._worker
        running = worker._running_ids()
        return {
            "worker_id": worker.worker_id,
            "queues": list(worker._subscriber.served),
            "concurrency": worker.concurrency,
            "running": sorted(running),
            "claimed_ahead": len(worker._producer.ahead),
            "stopping": worker._stopper.stopping,
        }

    async def apply_concurrency(self) -> None:
        """Apply a concurrency set by a command: grow the worker's own pool
        first (a pool given by the caller is left as it is)."""
        worker = self._worker
        wanted, self.wanted_concurrency = self.wanted_concurrency, None
        if wanted is None or wanted == worker.concurrency:
            return
        await worker._own_pool.grow(wanted)
        logger.info(
            "worker %s: concurrency %d (was %d)", worker.worker_id, wanted, worker.concurrency
        )
        worker.concurrency = wanted
