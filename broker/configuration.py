"""Each component's configuration, kept the way the Java Nucleus keeps it, and who watches it.

The Nucleus's store (com.aws.greengrass.config: Topics, Topic, Node) shows through IPC, so the
broker copies what a client can see of it:

- keys are case-insensitive (CaseInsensitiveString) and keep the spelling they were created
  with; a container lists its keys in Java's String.CASE_INSENSITIVE_ORDER and leaves out those
  that start with ``_`` (Topics.toPOJO);
- every node has a modification time in milliseconds. A leaf takes a new value only with a
  timestamp no older than its own (Topic.withNewerValue); a container's time follows its
  children's as they change (Topics.childChanged);
- a merge (UpdateBehaviorTree MERGE) never removes a key, but turns a leaf into a container, or
  a container into a leaf, when the new value is of the other kind (Topics.updateChild);
- a watch belongs to a node: it hears of changes to that node and everything below it, and
  passes to the node that replaces it. A change is reported with the path of the leaf (or the
  removed node) that changed, and a new leaf twice: once created (createLeafChild notifies),
  once given its value (withNewerValue notifies again). A timestamp that moves without the value
  changing, and a new container, are not reported (ConfigStoreIPCEventStreamAgent filters
  timestampUpdated and interiorAdded).

The Nucleus runs those notifications later on its publish thread; here they are collected
during the change and handed back to the caller, which sends them after its response.

Changes happen on the broker's event loop thread. Reads (:meth:`ConfigStore.snapshot`) may come
from any thread: every access holds the store's lock.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from edgeboost.broker.pubsub import EventSink

__all__ = [
    "MAX_DEPTH",
    "ConfigError",
    "ConfigStore",
    "ConfigWatch",
    "Notification",
    "fold",
    "json_document",
]

# Levels of containers a configuration may have (key path and value together). The Nucleus
# recurses through a merge as the broker does and has no limit of its own short of its stack;
# the broker refuses deeper documents before changing anything.
MAX_DEPTH = 100


class ConfigError(ValueError):
    """A change the Nucleus's store refuses (it throws IllegalArgumentException)."""


class _What(Enum):
    """com.aws.greengrass.config.WhatHappened, the members the broker produces."""

    CHANGED = "changed"
    CHILD_CHANGED = "childChanged"
    REMOVED = "removed"
    CHILD_REMOVED = "childRemoved"
    TIMESTAMP_UPDATED = "timestampUpdated"
    INTERIOR_ADDED = "interiorAdded"


# What a SubscribeToConfigurationUpdate stream is not told about (handleConfigNodeUpdate).
_QUIET = frozenset({_What.TIMESTAMP_UPDATED, _What.INTERIOR_ADDED})


def fold(key: str) -> str:
    """A key as Java's case-insensitive comparisons see it (String.equalsIgnoreCase,
    String.CASE_INSENSITIVE_ORDER): each character upper-cased, then lower-cased."""
    if key.isascii():
        return key.lower()
    return "".join(_fold_char(char) for char in key)


def _fold_char(char: str) -> str:
    # Java maps one UTF-16 unit to one; where Python's mapping grows a character ("ß".upper()
    # is "SS"), Java keeps it as it is.
    upper = char.upper()
    if len(upper) != 1:
        upper = char
    lower = upper.lower()
    return lower if len(lower) == 1 else upper


def json_document(
    value: Any, *, doubles: bool = False, depth: int = MAX_DEPTH, name: str = "the value"
) -> Any:
    """A copy of ``value`` made only of JSON types (dicts with string keys, lists, strings,
    finite numbers, booleans, None), at most ``depth`` containers deep; integers become floats
    with ``doubles`` (the Nucleus's Gson reads an IPC request's numbers as doubles). Raises
    ValueError naming what is wrong (``name`` for ``value`` itself)."""
    return _json_copy(value, doubles, depth, name)


def _json_copy(value: Any, doubles: bool, depth: int, where: str) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if not doubles:
            return value
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{where}: {value} does not fit a double") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}, which JSON cannot carry")
        return value
    if not isinstance(value, list | Mapping):
        raise ValueError(f"{where} is a {type(value).__name__}, which JSON cannot carry")
    if depth <= 0:
        raise ValueError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, list):
        return [
            _json_copy(item, doubles, depth - 1, f"{where}[{index}]")
            for index, item in enumerate(value)
        ]
    copied: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"{where} has the key {key!r}; configuration keys are strings")
        copied[key] = _json_copy(item, doubles, depth - 1, f"{where}.{key}")
    return copied


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- the tree -------------------------------------------------------------------------------
class _Node:
    __slots__ = ("modtime", "name", "parent", "watches")

    def __init__(self, name: str, parent: _Container | None, modtime: int) -> None:
        self.name = name
        # Kept after the node is removed, as in the Nucleus: a removed node still reports the
        # path it had.
        self.parent = parent
        self.modtime = modtime
        self.watches: list[ConfigWatch] = []


class _Leaf(_Node):
    __slots__ = ("value",)

    def __init__(self, name: str, parent: _Container, modtime: int) -> None:
        super().__init__(name, parent, modtime)
        self.value: Any = None


class _Container(_Node):
    __slots__ = ("children",)

    def __init__(self, name: str, parent: _Container | None, modtime: int) -> None:
        super().__init__(name, parent, modtime)
        self.children: dict[str, _Node] = {}  # by fold(name)

    def find(self, key_path: Sequence[str]) -> _Node | None:
        """Topics.findNode: every key but the last must name a container."""
        node: _Node = self
        for key in key_path:
            if not isinstance(node, _Container):
                return None
            child = node.children.get(fold(key))
            if child is None:
                return None
            node = child
        return node


class _Root(_Container):
    """services.<component>.configuration"""

    __slots__ = ("component",)

    def __init__(self, component: str, modtime: int) -> None:
        super().__init__("configuration", None, modtime)
        self.component = component


def _path(node: _Node) -> tuple[str, ...]:
    """The node's key path below its component's configuration."""
    names: list[str] = []
    while node.parent is not None:
        names.append(node.name)
        node = node.parent
    return tuple(reversed(names))


def _full_name(node: _Node) -> str:
    """Node.getFullName, for the Nucleus's error messages."""
    root: _Node = node
    while root.parent is not None:
        root = root.parent
    assert isinstance(root, _Root)
    return ".".join(("services", root.component, "configuration", *_path(node)))


def _to_pojo(container: _Container) -> dict[str, Any]:
    """Topics.toPOJO: keys in case-insensitive order, none that start with '_'."""
    document: dict[str, Any] = {}
    for key in sorted(container.children):
        child = container.children[key]
        if child.name.startswith("_"):
            continue
        if isinstance(child, _Container):
            document[child.name] = _to_pojo(child)
        else:
            assert isinstance(child, _Leaf)
            document[child.name] = child.value
    return document


@dataclass(eq=False)
class ConfigWatch:
    """One open SubscribeToConfigurationUpdate stream. Identity matters: two streams on the
    same key are two watches."""

    component: str  # as the subscriber spelled it: its events carry that spelling
    sink: EventSink
    stream_id: int
    # The node watched, then every node that replaced it. Only the first is attached until the
    # session registers the stream (after its response).
    nodes: list[_Node] = field(default_factory=list, repr=False)


@dataclass(frozen=True, slots=True)
class Notification:
    """A change a watch is to hear about: the key path of what changed."""

    watch: ConfigWatch
    key_path: tuple[str, ...]


class _Changes:
    """What one change to the store produces, in the order the Nucleus would publish it."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []

    def tell(self, watches: Iterable[ConfigWatch], what: _What, node: _Node | None) -> None:
        if node is None or what in _QUIET:
            return
        key_path = _path(node)
        self.notifications.extend(Notification(watch, key_path) for watch in watches)


def _child_changed(container: _Container, what: _What, child: _Node | None, out: _Changes) -> None:
    """Topics.childChanged, up the tree (a loop where the Nucleus recurses)."""
    node: _Container | None = container
    while node is not None:
        out.tell(node.watches, what, child)
        if what is _What.REMOVED:  # the container itself went: so did everything below it
            for below in list(node.children.values()):
                _fire(below, _What.REMOVED, out)
            return
        if child is not None and (child.modtime > node.modtime or not node.children):
            node.modtime = child.modtime
        else:
            newest = max(node.children.values(), key=_modtime, default=child)
            if newest is not None:
                node.modtime = newest.modtime
        node = node.parent


def _modtime(node: _Node) -> int:
    return node.modtime


def _fire(node: _Node, what: _What, out: _Changes) -> None:
    """Node.fire: a container tells its own watches (of nothing in particular, so they stay
    quiet); a leaf tells its watches, then its parent, unless it was removed (its parent tells
    of that itself)."""
    if isinstance(node, _Container):
        _child_changed(node, what, None, out)
        return
    out.tell(node.watches, what, node)
    if what is not _What.REMOVED and node.parent is not None:
        up = _What.TIMESTAMP_UPDATED if what is _What.TIMESTAMP_UPDATED else _What.CHILD_CHANGED
        _child_changed(node.parent, up, node, out)


def _create_container(parent: _Container, name: str, modtime: int, out: _Changes) -> _Container:
    """Topics.createInteriorChild: the existing container, or a new one."""
    existing = parent.children.get(fold(name))
    if isinstance(existing, _Container):
        return existing
    if existing is not None:
        raise ConfigError(
            f"{name} in {_full_name(parent)} is already a leaf, cannot become a container"
        )
    node = _Container(name, parent, modtime)
    parent.children[fold(name)] = node
    _child_changed(parent, _What.INTERIOR_ADDED, node, out)
    return node


def _create_leaf(parent: _Container, name: str, out: _Changes) -> _Leaf:
    """Topics.createLeafChild: the existing leaf, or a new one (no value, time 0)."""
    existing = parent.children.get(fold(name))
    if isinstance(existing, _Leaf):
        return existing
    if existing is not None:
        raise ConfigError(
            f"{name} in {_full_name(parent)} is already a container, cannot become a leaf"
        )
    leaf = _Leaf(name, parent, 0)
    parent.children[fold(name)] = leaf
    _child_changed(parent, _What.CHILD_CHANGED, leaf, out)
    return leaf


def _remove(parent: _Container, node: _Node, out: _Changes) -> None:
    """Topics.remove"""
    del parent.children[fold(node.name)]
    _fire(node, _What.REMOVED, out)
    _child_changed(parent, _What.CHILD_REMOVED, node, out)


def _adopt(node: _Node, replaced: _Node) -> None:
    """The replacement of a node takes over its watches (Topics.updateChild)."""
    for watch in replaced.watches:
        node.watches.append(watch)
        watch.nodes.append(node)


def _java_equals(a: Any, b: Any) -> bool:
    """Objects.equals on the values Gson and Jackson produce: 5 and 5.0 differ (Integer vs
    Double), and so do 1 and true."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_java_equals, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_java_equals(a[key], b[key]) for key in a)
    return bool(a == b)


def _set_value(leaf: _Leaf, modtime: int, value: Any, out: _Changes) -> None:
    """Topic.withNewerValue(modtime, value, allowTimestampToDecrease=false,
    allowTimestampToIncreaseWhenValueHasntChanged=true), as a merge calls it."""
    newer = modtime > leaf.modtime
    changed = not _java_equals(value, leaf.value)
    if (not changed or modtime < leaf.modtime) and not newer:
        return
    leaf.value = value
    leaf.modtime = modtime
    _fire(leaf, _What.CHANGED if changed else _What.TIMESTAMP_UPDATED, out)


def _merge(container: _Container, document: Mapping[str, Any], modtime: int, out: _Changes) -> None:
    """Topics.updateFromMap with MERGE: every key of ``document`` in order, nothing removed."""
    for key, value in document.items():
        existing = container.children.get(fold(key))
        if isinstance(value, dict):
            if existing is None or isinstance(existing, _Container):
                # The Nucleus stamps a new container with the current time, but only on its
                # publish thread, which UpdateConfiguration's timestamp check does not wait
                # for; the merge's own time gives the outcome that race nearly always has.
                child = _create_container(container, key, modtime, out)
            else:
                _remove(container, existing, out)
                child = _create_container(container, key, modtime, out)
                _adopt(child, existing)
            _merge(child, value, modtime, out)
        else:
            if existing is None or isinstance(existing, _Leaf):
                leaf = _create_leaf(container, key, out)
            else:
                _remove(container, existing, out)
                leaf = _create_leaf(container, key, out)
                _adopt(leaf, existing)
            _set_value(leaf, modtime, value, out)


# --- the store ------------------------------------------------------------------------------
class ConfigStore:
    """The configuration of every component, by name (case-insensitive, as the Nucleus finds
    services), each starting as the document given for it with the time of loading as its
    timestamp (the Nucleus stamps it with the deployment's)."""

    def __init__(
        self, configurations: Mapping[str, Mapping[str, Any]], *, loaded_at: int | None = None
    ) -> None:
        stamp = _now_ms() if loaded_at is None else loaded_at
        self._lock = threading.Lock()
        self._roots: dict[str, _Root] = {}
        for name, document in configurations.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"component names must be non-empty strings, got {name!r}")
            other = self._roots.get(fold(name))
            if other is not None:
                raise ValueError(
                    f"components {other.component} and {name} differ only in case; "
                    "the Nucleus keeps one configuration for both"
                )
            if not isinstance(document, Mapping):
                raise TypeError(f"the configuration of {name} must be a mapping")
            try:
                checked = json_document(document)
            except ValueError as exc:
                raise ValueError(f"the configuration of {name}: {exc}") from None
            root = _Root(name, stamp)
            _merge(root, checked, stamp, _Changes())  # nobody watches yet
            self._roots[fold(name)] = root

    def __contains__(self, component: object) -> bool:
        return isinstance(component, str) and fold(component) in self._roots

    def read(self, component: str, key_path: Sequence[str]) -> dict[str, Any] | None:
        """What GetConfiguration returns as ``value``: a leaf as ``{its name: its value}``, a
        container as a document; None when the component or the key does not exist."""
        with self._lock:
            root = self._roots.get(fold(component))
            node = None if root is None else root.find(key_path)
            if node is None:
                return None
            if isinstance(node, _Container):
                return _to_pojo(node)
            assert isinstance(node, _Leaf)
            return {node.name: node.value}

    def snapshot(self, component: str) -> dict[str, Any]:
        """A copy of a component's whole configuration (KeyError for an unknown one)."""
        document = self.read(component, ())
        if document is None:
            raise KeyError(f"unknown component {component!r}")
        return copy.deepcopy(document)

    def merge(
        self, component: str, key_path: Sequence[str], document: Mapping[str, Any], timestamp: int
    ) -> tuple[list[Notification], bool]:
        """UpdateConfiguration's change (ConfigStoreIPCEventStreamAgent): merge ``document`` at
        ``key_path`` of ``component``'s configuration with ``timestamp`` (ms). Returns what the
        watches are to hear, and whether the timestamp was stale: older than the merged node's
        time once merged. A stale merge still changed whatever was older than it."""
        with self._lock:
            root = self._roots[fold(component)]
            out = _Changes()
            node = root.find(key_path)
            stamp = timestamp
            if node is None:
                # lookupTopics(keyPath) creates what is missing, stamped now, and the merge
                # takes that time instead of the request's.
                target: _Container = root
                now = _now_ms()
                for key in key_path:
                    target = _create_container(target, key, now, out)
                stamp = target.modtime
                _merge(target, document, stamp, out)
            elif isinstance(node, _Leaf):
                assert node.parent is not None
                _merge(node.parent, {node.name: dict(document)}, stamp, out)
            else:
                assert isinstance(node, _Container)
                _merge(node, document, stamp, out)
            merged = root.find(key_path)
            stale = merged is not None and stamp < merged.modtime
            return out.notifications, stale

    def open_watch(
        self, component: str, key_path: Sequence[str], sink: EventSink, stream_id: int
    ) -> ConfigWatch | None:
        """A watch on ``key_path`` of ``component`` (None when either does not exist), attached
        only by :meth:`attach`."""
        with self._lock:
            root = self._roots.get(fold(component))
            node = None if root is None else root.find(key_path)
            if node is None:
                return None
            return ConfigWatch(component, sink, stream_id, [node])

    def attach(self, watch: ConfigWatch) -> None:
        with self._lock:
            for node in watch.nodes:
                node.watches.append(watch)

    def detach(self, watches: Iterable[ConfigWatch]) -> None:
        with self._lock:
            for watch in watches:
                for node in watch.nodes:
                    if watch in node.watches:  # a watch never attached is on no node's list
                        node.watches.remove(watch)
                watch.nodes.clear()
