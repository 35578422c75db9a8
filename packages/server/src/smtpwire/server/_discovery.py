"""Finding the ``smtp_*``, ``handle_*`` and ``auth_*`` methods of a server class or
a handler once, not once per connection.

aiosmtpd runs ``dir()`` over the server and the handler and builds dictionaries
of bound methods for every connection it accepts: more than half of the cost of
making a session, and about 2.5 KiB of every idle connection.  Here the names are
found once per class (and per set of methods an instance carries of its own) and
the tables are shared; a method is bound when it is called.

A class that makes up its attributes as they are asked for (``__getattr__``,
``__getattribute__`` or ``__dir__`` of its own, as ``unittest.mock`` does) is
looked at afresh for every instance, as aiosmtpd does.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple

_DYNAMIC_HOOKS: Final = ("__getattr__", "__getattribute__", "__dir__")

# class -> {(prefix, the instance's own names with that prefix): names found}
_NAMES: weakref.WeakKeyDictionary[type, dict[tuple[str, tuple[str, ...]], tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)
_DYNAMIC: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def has_dynamic_attributes(owner: object) -> bool:
    """Whether ``owner``'s class makes up attributes as they are asked for."""
    cls = type(owner)
    dynamic = _DYNAMIC.get(cls)
    if dynamic is None:
        dynamic = any(name in vars(klass) for klass in cls.__mro__[:-1] for name in _DYNAMIC_HOOKS)
        _DYNAMIC[cls] = dynamic
    return dynamic


def _scan(owner: object, prefix: str) -> tuple[str, ...]:
    return tuple(
        name
        for name in dir(owner)
        if name.startswith(prefix) and callable(getattr(owner, name, None))
    )


def method_names(owner: object, prefix: str) -> tuple[str, ...]:
    """The names of ``owner``'s callable attributes that start with ``prefix``, in
    ``dir()`` order; the same tuple for every instance of a class."""
    if has_dynamic_attributes(owner):
        return _scan(owner, prefix)
    cls = type(owner)
    own = tuple(name for name in getattr(owner, "__dict__", ()) if name.startswith(prefix))
    per_class = _NAMES.get(cls)
    if per_class is None:
        per_class = _NAMES[cls] = {}
    key = (prefix, own)
    names = per_class.get(key)
    if names is None:
        names = per_class[key] = _scan(owner, prefix)
    return names


class SharedTables:
    """Tables computed from a key once and then shared, kept for as long as the
    classes in the key live (the key's first item must be a class)."""

    def __init__(self) -> None:
        self._tables: weakref.WeakKeyDictionary[type, dict[Any, Any]] = weakref.WeakKeyDictionary()

    def get(self, cls: type, key: Any) -> Any:
        return self._tables.get(cls, {}).get(key)

    def put(self, cls: type, key: Any, table: Any) -> Any:
        """Keep ``table`` and return it, or the one another thread kept first."""
        return self._tables.setdefault(cls, {}).setdefault(key, table)


# -- the tables of a server class and of a handler ---------------------------------------

_CommandFunction = Callable[[Any, str | None], Awaitable[None]]
_COMMAND_TABLES: Final = SharedTables()
_HOOK_TABLES: Final = SharedTables()


def command_table(cls: type, chunking: bool) -> Mapping[str, _CommandFunction]:
    """``{"VERB": smtp_VERB function}`` for a server class, made once and shared."""
    table: Mapping[str, _CommandFunction] | None = _COMMAND_TABLES.get(cls, chunking)
    if table is None:
        found = {name[5:]: getattr(cls, name) for name in dir(cls) if name.startswith("smtp_")}
        if not chunking:
            found.pop("BDAT", None)  # unknown, and not in HELP, as in aiosmtpd
        table = _COMMAND_TABLES.put(cls, chunking, MappingProxyType(found))
    return table


class HandlerHooks(NamedTuple):
    """``{"VERB": "handle_VERB"}`` for a handler (bound when called) and the form of
    its EHLO hook; shared by the connections of handlers of one class."""

    names: Mapping[str, str]
    ehlo_version: str | None


def handler_hooks(handler: Any) -> HandlerHooks:
    names = method_names(handler, "handle_")
    hooks: HandlerHooks | None = _HOOK_TABLES.get(type(handler), names)
    if hooks is None:
        table = MappingProxyType({name[7:]: name for name in names})
        ehlo = _ehlo_hook_version(handler) if "EHLO" in table else None
        hooks = _HOOK_TABLES.put(type(handler), names, HandlerHooks(table, ehlo))
    elif hooks.ehlo_version is not None and (
        "handle_EHLO" in getattr(handler, "__dict__", ()) or has_dynamic_attributes(handler)
    ):
        # An EHLO hook of the instance's own: its signature is its own too.
        hooks = hooks._replace(ehlo_version=_ehlo_hook_version(handler))
    return hooks


def _ehlo_hook_version(handler: Any) -> str:
    parameters = inspect.signature(handler.handle_EHLO).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return "new"
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) == 5:
        return "new"
    if len(positional) == 4:
        return "old"
    raise RuntimeError("Unsupported EHLO Hook")
