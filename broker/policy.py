"""Who may publish or subscribe to what: the ``aws.greengrass.ipc.pubsub`` access control of a
component, matched the way the Nucleus matches local pub/sub resources.

Resources are exact strings in which ``*`` matches any run of characters (``/`` included).
MQTT wildcards are literal here: a policy resource ``t/#`` grants the topic string ``t/#`` only,
never ``t/1``. ``${*}``, ``${$}`` and ``${?}`` stand for a literal ``*``, ``$`` and ``?``; a bare
``?`` is invalid, as in the Nucleus.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ANY",
    "PUBSUB_DESTINATION",
    "AccessPolicy",
    "ComponentPolicy",
    "PolicyError",
    "compile_resource",
]

logger = logging.getLogger(__name__)

PUBSUB_DESTINATION = "aws.greengrass.ipc.pubsub"
ANY = "*"
_ESCAPE = re.compile(r"\$\{(.)\}")


class PolicyError(ValueError):
    """An access-control block the Nucleus would refuse to load."""


def compile_resource(resource: str) -> re.Pattern[str]:
    """Turn a policy resource into a regular expression that must match a whole topic."""
    if resource == "":
        raise PolicyError("a policy resource cannot be empty")
    parts: list[str] = []
    index = 0
    while index < len(resource):
        char = resource[index]
        if resource.startswith("${", index):
            escaped = _ESCAPE.match(resource, index)
            if escaped is None or escaped.group(1) not in "*$?":
                raise PolicyError(
                    f"resource {resource!r} has an invalid escape; use ${{*}}, ${{$}} or ${{?}}"
                )
            parts.append(re.escape(escaped.group(1)))
            index = escaped.end()
            continue
        if char == "?":
            raise PolicyError(
                f"resource {resource!r} contains '?', which is not a wildcard; write ${{?}}"
            )
        parts.append(".*" if char == "*" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True)
class AccessPolicy:
    """One policy of an access-control block: these operations on these resources."""

    policy_id: str
    operations: frozenset[str]
    resources: tuple[str, ...]
    _patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.operations:
            raise PolicyError(f"policy {self.policy_id!r} has no operations")
        object.__setattr__(self, "_patterns", tuple(compile_resource(r) for r in self.resources))

    def allows(self, operation: str, resource: str) -> bool:
        if operation not in self.operations and ANY not in self.operations:
            return False
        return any(pattern.fullmatch(resource) for pattern in self._patterns)


@dataclass(frozen=True)
class ComponentPolicy:
    """A component's identity and its local pub/sub permissions."""

    name: str
    pubsub: tuple[AccessPolicy, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise PolicyError("a component needs a name")

    def is_authorized(self, operation: str, resource: str) -> bool:
        return any(policy.allows(operation, resource) for policy in self.pubsub)

    def grants(self, operation: str) -> bool:
        """Whether any policy names ``operation`` (or ``*``), whatever its resources: how the
        Nucleus authorizes a request that has no topic at all."""
        return any(operation in p.operations or ANY in p.operations for p in self.pubsub)

    def denial(self, operation: str, resource: str) -> str:
        """The Nucleus's wording when ``is_authorized`` is false."""
        return (
            f"Principal {self.name} is not authorized to perform "
            f"{PUBSUB_DESTINATION}:{operation} on resource {resource}"
        )

    @classmethod
    def allow_all(cls, name: str) -> ComponentPolicy:
        """Every pub/sub operation on every topic (handy for demos and tests)."""
        return cls(name, (AccessPolicy("allow-all", frozenset({ANY}), (ANY,)),))

    @classmethod
    def from_access_control(
        cls, name: str, access_control: Mapping[str, Any] | str
    ) -> ComponentPolicy:
        """Build from a recipe's ``accessControl`` value (a mapping, or a JSON string as the
        Nucleus also accepts). Destinations other than local pub/sub are ignored."""
        if isinstance(access_control, str):
            try:
                access_control = json.loads(access_control)
            except json.JSONDecodeError as exc:
                raise PolicyError(
                    f"accessControl of {name} is a string but not JSON: {exc}"
                ) from exc
        if not isinstance(access_control, Mapping):
            raise PolicyError(f"accessControl of {name} must be a mapping")
        policies: list[AccessPolicy] = []
        for destination, block in access_control.items():
            if str(destination).lower() != PUBSUB_DESTINATION:
                logger.debug("%s: ignoring access control for %s", name, destination)
                continue
            policies.extend(_parse_block(name, block))
        return cls(name, tuple(policies))


def _parse_block(component: str, block: Any) -> Iterable[AccessPolicy]:
    if not isinstance(block, Mapping):
        raise PolicyError(f"{component}: {PUBSUB_DESTINATION} must map policy ids to policies")
    for policy_id, body in block.items():
        if not isinstance(body, Mapping):
            raise PolicyError(f"{component}: policy {policy_id!r} must be a mapping")
        # Policy keys are case-insensitive in the Nucleus (Jackson, case-insensitive properties).
        fields = {str(key).lower(): value for key, value in body.items()}
        operations = _string_list(component, policy_id, "operations", fields.get("operations"))
        resources = _string_list(component, policy_id, "resources", fields.get("resources"))
        yield AccessPolicy(str(policy_id), frozenset(operations), tuple(resources))


def _string_list(component: str, policy_id: Any, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PolicyError(f"{component}: {key} of policy {policy_id!r} must be a list of strings")
    return value
