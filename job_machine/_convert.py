"""Task function arguments and return values to JSON and back, by their annotations.

What goes out (:func:`to_json`): JSON values as they are; dataclass
instances and pydantic models as JSON objects (a model by
``model_dump(mode="json")``); tuples as arrays; recursively inside lists,
tuples and dicts. Anything else is left for the JSON encoder, which refuses
it with :class:`~job_machine.InvalidData`.

What comes in (:func:`from_json`): a JSON value is turned into what the
annotation asks for: a dataclass (its fields converted by their own
annotations), a pydantic model (``model_validate``), a tuple, and the same
inside ``list[...]``, ``tuple[...]``, ``dict[str, ...]`` and ``X | None``.
Other annotations (``int``, ``str``, ``Any``, ``dict``, a TypedDict...) take
the JSON value as it is: nothing is checked.

pydantic is never imported here: a value or an annotation is a pydantic model
only if pydantic has been imported by whoever made it.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any, Union, get_args, get_origin, get_type_hints


def _is_model(value: object) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def _is_model_class(hint: object) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(hint, type) and issubclass(hint, pydantic.BaseModel)


def to_json(value: Any) -> Any:
    """``value`` made of JSON values only, as far as it can be (see the module)."""
    if value is None or isinstance(value, str | int | float):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if _is_model(value):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(value: Any, hint: Any) -> Any:  # noqa: PLR0911
    """``value`` (decoded JSON) as the annotation ``hint`` asks (see the module).

    :raises TypeError, ValueError: the value does not fit a dataclass
        (missing or unknown fields), or a pydantic model refused it.
    """
    if value is None or hint is Any or hint is None:
        return value
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        options = [a for a in get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return from_json(value, options[0])
        for option in options:  # the first structured type that takes it
            if _structured(option) and isinstance(value, Mapping):
                try:
                    return from_json(value, option)
                except (TypeError, ValueError):
                    continue
        return value
    if origin is not None:
        return _generic(value, origin, get_args(hint))
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            return _dataclass(hint, value)
        if _is_model_class(hint):
            return hint.model_validate(value)  # type: ignore[attr-defined]
        if hint is tuple and isinstance(value, list):
            return tuple(value)
    return value


def _structured(hint: Any) -> bool:
    return isinstance(hint, type) and (dataclasses.is_dataclass(hint) or _is_model_class(hint))


def _generic(value: Any, origin: Any, args: tuple[Any, ...]) -> Any:
    if origin in (list, Sequence, set, frozenset) and isinstance(value, list):
        item = args[0] if args else Any
        items = [from_json(v, item) for v in value]
        return origin(items) if origin in (set, frozenset) else items
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(v, args[0]) for v in value)
        if args and len(args) == len(value):
            return tuple(from_json(v, a) for v, a in zip(value, args, strict=True))
        return tuple(value)
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        item = args[1] if len(args) == 2 else Any
        return {k: from_json(v, item) for k, v in value.items()}
    return value


def _dataclass(cls: type, value: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise TypeError(f"{cls.__qualname__} has no field {', '.join(map(repr, unknown))}")
    kwargs = {name: from_json(v, hints.get(name, Any)) for name, v in value.items()}
    return cls(**kwargs)
