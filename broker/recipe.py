"""Read a component's name, pub/sub access control and default configuration from its recipe.

JSON recipes need only the standard library; YAML recipes need PyYAML. Recipe keys are matched
case-insensitively, as the Nucleus does (``componentName`` and ``ComponentName`` both work).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeboost.broker.configuration import json_document
from edgeboost.broker.policy import ComponentPolicy, PolicyError

__all__ = [
    "RecipeComponent",
    "RecipeError",
    "default_configuration",
    "load_recipe",
    "load_recipe_policy",
    "parse_recipe",
    "policy_from_recipe",
]

_YAML_SUFFIXES = (".yaml", ".yml")


class RecipeError(ValueError):
    """A recipe that cannot be read or has no usable component name / access control."""


@dataclass(frozen=True)
class RecipeComponent:
    """What the broker takes from a recipe: who the component is and may do, and the
    configuration it starts with."""

    policy: ComponentPolicy
    # ComponentConfiguration.DefaultConfiguration as written, accessControl included: the Java
    # Nucleus keeps accessControl in the component's configuration too (GetConfiguration
    # returns it), and reads the policy from there.
    configuration: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.policy.name


def load_recipe(path: str | os.PathLike[str]) -> RecipeComponent:
    """The component declared by the recipe at ``path`` (JSON, or YAML with PyYAML)."""
    recipe_path = Path(path)
    try:
        text = recipe_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {recipe_path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RecipeError(f"recipe {recipe_path} is not UTF-8 text") from exc
    document = parse_recipe(text, recipe_path.name)
    try:
        return RecipeComponent(policy_from_recipe(document), default_configuration(document))
    except (RecipeError, PolicyError) as exc:
        raise RecipeError(f"recipe {recipe_path}: {exc}") from exc


def load_recipe_policy(path: str | os.PathLike[str]) -> ComponentPolicy:
    """The component policy declared by the recipe at ``path`` (JSON, or YAML with PyYAML)."""
    return load_recipe(path).policy


def parse_recipe(text: str, name: str = "recipe") -> Any:
    """Parse recipe text; ``name`` (a file name) picks JSON or YAML by its suffix."""
    if name.lower().endswith(_YAML_SUFFIXES):
        return _parse_yaml(text, name)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if name.lower().endswith(".json"):
            raise RecipeError(f"{name} is not valid JSON: {exc}") from exc
    return _parse_yaml(text, name)  # no telling suffix and not JSON: YAML is the other format


def _parse_yaml(text: str, name: str) -> Any:
    try:
        import yaml  # optional: the broker itself is stdlib-only
    except ImportError:
        raise RecipeError(
            f"{name} looks like a YAML recipe, but PyYAML is not installed: "
            "pip install pyyaml, or convert the recipe to JSON"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{name} is not valid YAML: {exc}") from exc


def policy_from_recipe(recipe: Any) -> ComponentPolicy:
    """Build the policy from a parsed recipe: ``ComponentName`` and
    ``ComponentConfiguration.DefaultConfiguration.accessControl``."""
    if not isinstance(recipe, Mapping):
        raise RecipeError("a recipe must be a mapping at the top level")
    name = _get(recipe, "ComponentName")
    if not isinstance(name, str) or not name:
        raise RecipeError("the recipe has no ComponentName")
    defaults = _defaults(recipe)
    access_control = _get(defaults, "accessControl") if isinstance(defaults, Mapping) else None
    if access_control is None:
        return ComponentPolicy(name)  # a component may simply have no IPC permissions
    return ComponentPolicy.from_access_control(name, access_control)


def default_configuration(recipe: Any) -> dict[str, Any]:
    """``ComponentConfiguration.DefaultConfiguration`` of a parsed recipe ({} when absent), as a
    JSON document. The Nucleus fails a deployment whose default configuration is not an object;
    here that, and anything JSON cannot carry (a YAML date, NaN), is a RecipeError."""
    if not isinstance(recipe, Mapping):
        raise RecipeError("a recipe must be a mapping at the top level")
    defaults = _defaults(recipe)
    if defaults is None:
        return {}
    if not isinstance(defaults, Mapping):
        raise RecipeError("DefaultConfiguration must be a mapping")
    try:
        document: dict[str, Any] = json_document(defaults, name="DefaultConfiguration")
    except ValueError as exc:
        raise RecipeError(str(exc)) from None
    return document


def _defaults(recipe: Mapping[str, Any]) -> Any:
    configuration = _get(recipe, "ComponentConfiguration")
    if not isinstance(configuration, Mapping):
        return None
    return _get(configuration, "DefaultConfiguration")


def _get(mapping: Mapping[str, Any], key: str) -> Any:
    """Case-insensitive lookup of a recipe key."""
    wanted = key.lower()
    for candidate, value in mapping.items():
        if isinstance(candidate, str) and candidate.lower() == wanted:
            return value
    return None
