"""Read a component's name and pub/sub access control from its Greengrass recipe.

JSON recipes need only the standard library; YAML recipes need PyYAML. Recipe keys are matched
case-insensitively, as the Nucleus does (``componentName`` and ``ComponentName`` both work).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeboost.broker.policy import ComponentPolicy, PolicyError

__all__ = ["RecipeError", "load_recipe_policy", "parse_recipe", "policy_from_recipe"]

_YAML_SUFFIXES = (".yaml", ".yml")


class RecipeError(ValueError):
    """A recipe that cannot be read or has no usable component name / access control."""


def load_recipe_policy(path: str | os.PathLike[str]) -> ComponentPolicy:
    """The component policy declared by the recipe at ``path`` (JSON, or YAML with PyYAML)."""
    recipe_path = Path(path)
    try:
        text = recipe_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {recipe_path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RecipeError(f"recipe {recipe_path} is not UTF-8 text") from exc
    document = parse_recipe(text, recipe_path.name)
    try:
        return policy_from_recipe(document)
    except (RecipeError, PolicyError) as exc:
        raise RecipeError(f"recipe {recipe_path}: {exc}") from exc


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
    configuration = _get(recipe, "ComponentConfiguration")
    defaults = (
        _get(configuration, "DefaultConfiguration") if isinstance(configuration, Mapping) else None
    )
    access_control = _get(defaults, "accessControl") if isinstance(defaults, Mapping) else None
    if access_control is None:
        return ComponentPolicy(name)  # a component may simply have no IPC permissions
    return ComponentPolicy.from_access_control(name, access_control)


def _get(mapping: Mapping[str, Any], key: str) -> Any:
    """Case-insensitive lookup of a recipe key."""
    wanted = key.lower()
    for candidate, value in mapping.items():
        if isinstance(candidate, str) and candidate.lower() == wanted:
            return value
    return None
