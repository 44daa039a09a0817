"""Local pub/sub topic matching, following the Nucleus's subscription trie rather than the MQTT
spec where the two differ:

- levels are split like Java's ``String.split("/")``, which drops trailing empty levels, so a
  publish to ``a/b/`` reaches a subscription to ``a/b``;
- ``+`` matches exactly one level; a final ``#`` matches one or more remaining levels, so
  ``a/#`` does **not** match ``a`` itself (MQTT says it should);
- a ``#`` that is not the last level behaves like ``+``;
- ``+`` or ``#`` inside a level (``a+``) is an ordinary character.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "MULTI_LEVEL",
    "SINGLE_LEVEL",
    "filter_matches",
    "has_wildcard_level",
    "is_wildcard_filter",
    "publish_topic_has_wildcard",
    "topic_levels",
]

SINGLE_LEVEL = "+"
MULTI_LEVEL = "#"
_GLOB = "*"


def topic_levels(topic: str) -> tuple[str, ...]:
    """Split a topic into levels with Java ``String.split("/")`` semantics."""
    if topic == "":
        return ("",)
    levels = topic.split("/")
    while levels and levels[-1] == "":
        levels.pop()
    return tuple(levels)


def filter_matches(filter_levels: Sequence[str], topic: Sequence[str]) -> bool:
    """Whether a subscription with ``filter_levels`` receives a publish to ``topic`` levels."""
    if not filter_levels or not topic:
        return False  # "/" splits to no levels; the Nucleus never delivers those
    for index, level in enumerate(filter_levels):
        if index == len(topic):
            return False  # filter is longer than the topic
        if level == MULTI_LEVEL and index == len(filter_levels) - 1:
            return True  # a final '#' takes this level and everything after it
        if level not in (SINGLE_LEVEL, MULTI_LEVEL) and level != topic[index]:
            return False
    return len(filter_levels) == len(topic)


def has_wildcard_level(filter_levels: Sequence[str]) -> bool:
    """Whether :func:`filter_matches` can match a topic other than the filter's own levels
    (any ``+`` or ``#`` level; a non-final ``#`` acts as ``+``)."""
    return SINGLE_LEVEL in filter_levels or MULTI_LEVEL in filter_levels


def is_wildcard_filter(topic_filter: str) -> bool:
    """True when a filter uses ``+`` as a level or ``#`` as its last level (the Nucleus's test
    for choosing RECEIVE_MESSAGES_FROM_OTHERS as the default receive mode)."""
    levels = topic_levels(topic_filter)
    return SINGLE_LEVEL in levels or (bool(levels) and levels[-1] == MULTI_LEVEL)


def publish_topic_has_wildcard(topic: str) -> bool:
    """The Nucleus refuses to publish to any topic containing ``+``, ``#`` or ``*`` anywhere."""
    return any(char in topic for char in (SINGLE_LEVEL, MULTI_LEVEL, _GLOB))
