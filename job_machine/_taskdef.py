"""What a task function is on the wire: its name, queue, payload and reply.

A task function's task carries plain JSON, which any client (a Perl one
too) can send and any worker read::

    {"task": "myapp.tasks.add", "args": [1, 2], "kwargs": {}}

``task`` names the function (several functions may share a queue);
``args`` and ``kwargs`` are its arguments. A worker accepts a payload
without ``kwargs`` or ``args`` (none of that kind), and without ``task``
when its queue is served by exactly one function; other keys are ignored.
The function's return value, as JSON, is the task's reply.

This module does no I/O: :class:`~job_machine.App` builds payloads with it,
the task functions' workers (job_machine/_async/taskworker.py) read them.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

from . import _codec
from ._convert import from_json, to_json
from .channels import validate_queue
from .errors import InvalidData, InvalidQueueName, TaskRejected
from .task import Task

#: The payload's keys.
TASK, ARGS, KWARGS = "task", "args", "kwargs"


def default_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of ``fn`` (``<locals>`` left out; a script run as
    ``python -m pkg.mod`` has its module's real name, not ``__main__``)."""
    module = getattr(fn, "__module__", None) or "__main__"
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "task")
    return f"{module}.{qualname}".replace(".<locals>", "")


@dataclass(frozen=True, eq=False)
class TaskDef:
    """One task function: what it is called on the wire, where it goes, how
    its arguments and reply convert."""

    name: str
    queue: str
    fn: Callable[..., Any]
    #: Whether it is an ``async def`` (only an asyncio worker can run it).
    is_async: bool
    signature: inspect.Signature = field(repr=False)
    #: Its annotations once resolved (see :attr:`hints`).
    _hints: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def hints(self) -> dict[str, Any]:
        """Its annotations, resolved (parameters and ``return``) on first use,
        so that a type defined after the function in its module is found.
        An annotation that does not resolve means no conversion at all."""
        if self._hints is None:
            try:
                hints = get_type_hints(self.fn)
            except Exception:
                return {}  # not yet resolvable: try again next time
            object.__setattr__(self, "_hints", hints)
            return hints
        return self._hints

    @property
    def streams(self) -> bool:
        """Whether it is a generator (``def`` or ``async def``): what it
        yields is streamed to the caller as parts, what a ``def`` one
        returns is the reply (an ``async def`` generator cannot return a
        value: its task is done without a reply)."""
        return inspect.isgeneratorfunction(self.fn) or inspect.isasyncgenfunction(self.fn)

    @classmethod
    def of(cls, fn: Callable[..., Any], name: str | None, queue: str | None) -> TaskDef:
        """The definition of ``fn``; name and queue default to ``module.function``.

        :raises InvalidQueueName: the queue (or the default one) is not a valid
            queue name; the message says to pass ``queue=``.
        """
        if not callable(fn):
            raise TypeError(f"a task function must be callable, not {fn!r}")
        task_name = name if name is not None else default_name(fn)
        if not isinstance(task_name, str) or not task_name:
            raise ValueError(f"a task function's name must be a non-empty string: {task_name!r}")
        try:
            queue_name = validate_queue(queue if queue is not None else task_name)
        except InvalidQueueName as ex:
            if queue is not None:
                raise
            raise InvalidQueueName(
                f"task function {task_name}: its default queue is its name, which is not "
                f"a valid queue name ({ex}); pass queue= (and name=) to @app.task"
            ) from None
        return cls(
            name=task_name,
            queue=queue_name,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn),
            signature=inspect.signature(fn),
        )

    # -- the sender's side ----------------------------------------------------

    def payload(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The task's data for a call with these arguments.

        :raises TypeError: they do not fit the function's signature.
        :raises InvalidData: one cannot be encoded as JSON; the message names it.
        """
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as ex:
            raise TypeError(f"{self.name}(): {ex}") from None
        data = {
            TASK: self.name,
            ARGS: [to_json(a) for a in bound.args],
            KWARGS: {k: to_json(v) for k, v in bound.kwargs.items()},
        }
        try:
            _codec.encode(data)
        except InvalidData:
            self._name_the_culprit(bound.arguments)
            raise
        return data

    def _name_the_culprit(self, arguments: Mapping[str, Any]) -> None:
        for name, value in arguments.items():
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                items: Iterable[tuple[str, Any]] = (
                    (f"{name}[{n}]", v) for n, v in enumerate(value)
                )
            elif kind is inspect.Parameter.VAR_KEYWORD:
                items = ((str(k), v) for k, v in value.items())
            else:
                items = [(name, value)]
            for label, item in items:
                try:
                    _codec.encode(to_json(item))
                except InvalidData as ex:
                    detail = str(ex).partition(": ")[2]
                    raise InvalidData(
                        f"argument {label!r} of {self.name} cannot be encoded as JSON: {detail}"
                    ) from None

    def reply_value(self, raw: Any) -> Any:
        """The reply as the function's return annotation asks (a generator's:
        the third argument of ``Generator[Y, S, R]``)."""
        hint = self.hints.get("return", Any)
        if self.streams:
            args = get_args(hint)
            hint = args[2] if get_origin(hint) is Generator and len(args) == 3 else Any
        return from_json(raw, hint)

    def part_value(self, raw: Any) -> Any:
        """A streamed part as a generator's annotation asks (``Y`` of
        ``Generator[Y, ...]``, ``Iterator[Y]``, ``AsyncIterator[Y]``...)."""
        hint = self.hints.get("return", Any)
        args = get_args(hint)
        return from_json(raw, args[0] if self.streams and args else Any)

    # -- the worker's side ----------------------------------------------------

    def arguments(self, data: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments a payload calls the function with.

        :raises TaskRejected: they are malformed or do not fit the signature.
        """
        args = data.get(ARGS, [])
        kwargs = data.get(KWARGS, {})
        if not isinstance(args, list):
            raise TaskRejected(f"task {self.name}: 'args' must be a JSON array, not {args!r}")
        if not isinstance(kwargs, dict):
            raise TaskRejected(f"task {self.name}: 'kwargs' must be a JSON object, not {kwargs!r}")
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as ex:
            raise TaskRejected(f"task {self.name}: {ex}") from None
        name = ""
        try:
            for name, value in list(bound.arguments.items()):
                hint = self.hints.get(name, Any)
                kind = self.signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_POSITIONAL:
                    bound.arguments[name] = tuple(from_json(v, hint) for v in value)
                elif kind is inspect.Parameter.VAR_KEYWORD:
                    bound.arguments[name] = {k: from_json(v, hint) for k, v in value.items()}
                else:
                    bound.arguments[name] = from_json(value, hint)
        except (TypeError, ValueError) as ex:
            raise TaskRejected(f"task {self.name}: argument {name!r}: {ex}") from None
        return list(bound.args), dict(bound.kwargs)


class TaskTable:
    """The task functions of an app, by name, and which queue serves which."""

    def __init__(self) -> None:
        self._by_name: dict[str, TaskDef] = {}

    def add(self, taskdef: TaskDef) -> None:
        """Register a function.

        :raises ValueError: another function has that name.
        """
        old = self._by_name.get(taskdef.name)
        if old is not None and old.fn is not taskdef.fn:
            raise ValueError(
                f"two task functions are named {taskdef.name!r}: pass name= to one of them"
            )
        self._by_name[taskdef.name] = taskdef

    def __iter__(self) -> Any:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> TaskDef | None:
        """The function of that name, if any."""
        return self._by_name.get(name)

    def queues(self) -> list[str]:
        """Every queue a function of the table goes to, in the order they were added."""
        return list(dict.fromkeys(d.queue for d in self._by_name.values()))

    def resolve(self, task: Task) -> tuple[TaskDef, list[Any], dict[str, Any]]:
        """The function a task calls, and its arguments.

        :raises TaskRejected: the payload is not a task function's, names a
            function this table does not have, or its arguments do not fit.
        """
        data = task.data
        if not isinstance(data, dict):
            raise TaskRejected(
                f"task {task.id} on queue {task.queue}: a task function's data is a JSON "
                f'object like {{"task": "module.function", "args": [...]}}, not {data!r:.80}'
            )
        name = data.get(TASK)
        if name is None:
            here = [d for d in self._by_name.values() if d.queue == task.queue]
            if len(here) != 1:
                raise TaskRejected(
                    f"task {task.id} on queue {task.queue}: its data names no task function "
                    f"(the {TASK!r} key), and {len(here)} functions serve that queue"
                )
            taskdef = here[0]
        else:
            found = self._by_name.get(name) if isinstance(name, str) else None
            if found is None:
                known = ", ".join(sorted(self._by_name)) or "none"
                raise TaskRejected(
                    f"task {task.id} on queue {task.queue}: no task function named {name!r} "
                    f"in this worker (it knows: {known})"
                )
            taskdef = found
        args, kwargs = taskdef.arguments(data)
        return taskdef, args, kwargs
