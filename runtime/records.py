"""``@record``: frozen dataclasses for the device runtime, without importing ``dataclasses``.

``dataclasses`` imports ``inspect`` (with ``ast``, ``dis`` and ``tokenize``): 1.1 MiB of a
device's 16 MiB budget for `edgeboost serve`, and start-up time on an armv7 board. The
runtime's records are configuration and manifests (built a few times per process), so a
plain ``__init__`` is fast enough; per-request objects are hand-written ``__slots__`` classes.

What a record gets, as from ``@dataclass(frozen=True)``: ``__init__`` (positional or keyword
arguments, the class attributes as defaults, ``field(default_factory=...)``), ``__repr__``,
``__eq__``, ``__hash__`` and immutability; ``replace`` and ``as_dict`` are the module's
``dataclasses.replace`` and ``dataclasses.asdict``. Type checkers see a dataclass
(PEP 681). Fields come from the class's own annotations: records do not inherit.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from typing_extensions import dataclass_transform

    R = TypeVar("R")
else:

    def dataclass_transform(**_: object) -> object:
        return lambda decorated: decorated


__all__ = ["as_dict", "field", "record", "replace"]

_FIELDS = "__record_fields__"  # the field names, in order, on each record class


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A default made anew for each record (a dict, a time), as ``dataclasses.field``."""
    return _Factory(default_factory)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[R]) -> type[R]:
    # The class's own annotations (records do not inherit), in the order they are written.
    names = tuple(getattr(cls, "__annotations__", {}))
    defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
    for name in defaults:
        delattr(cls, name)  # a class attribute would hide a missing instance value
    _check_order(cls, names, defaults)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes {len(names)} arguments, got {len(args)}")
        values = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names or name in values:
                raise TypeError(f"{cls.__name__}() got an unexpected or repeated {name!r}")
            values[name] = value
        for name in names:
            if name not in values:
                if name not in defaults:
                    raise TypeError(f"{cls.__name__}() missing argument {name!r}")
                default = defaults[name]
                values[name] = default.make() if isinstance(default, _Factory) else default
            object.__setattr__(self, name, values[name])

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{cls.__qualname__}({inner})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _values(self) == _values(other)

    def __hash__(self: Any) -> int:
        return hash(_values(self))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        raise AttributeError(f"{cls.__name__} is immutable: use records.replace")

    def __delattr__(self: Any, name: str) -> None:
        raise AttributeError(f"{cls.__name__} is immutable")

    for method in (__init__, __repr__, __eq__, __hash__, __setattr__, __delattr__):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        setattr(cls, method.__name__, method)
    setattr(cls, _FIELDS, names)
    return cls


def _check_order(cls: type, names: tuple[str, ...], defaults: dict[str, Any]) -> None:
    seen_default = False
    for name in names:
        if name in defaults:
            seen_default = True
        elif seen_default:
            raise TypeError(f"{cls.__name__}.{name}: a field without a default after one with")


def _values(obj: Any) -> tuple[Any, ...]:
    return tuple(getattr(obj, name) for name in getattr(obj, _FIELDS))


def is_record(obj: object) -> bool:
    return hasattr(type(obj), _FIELDS)


def replace(obj: R, **changes: Any) -> R:
    """A copy of the record ``obj`` with ``changes``, as ``dataclasses.replace``."""
    values = {name: getattr(obj, name) for name in getattr(obj, _FIELDS)}
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field {sorted(unknown)[0]!r}")
    values.update(changes)
    return type(obj)(**values)


def as_dict(obj: Any) -> Any:
    """``dataclasses.asdict``: records as dicts, recursively through lists, tuples and dicts."""
    if is_record(obj):
        return {name: as_dict(getattr(obj, name)) for name in getattr(obj, _FIELDS)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(as_dict(item) for item in obj)
    if isinstance(obj, dict):
        return {as_dict(key): as_dict(value) for key, value in obj.items()}
    return obj
