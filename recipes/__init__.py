"""Greengrass recipe templates and the packaging that fills them (build host side)."""

from .package import (
    MAX_RECIPE_BYTES,
    Component,
    ComponentOptions,
    Package,
    install_on_this_machine,
    package_bundle,
    unpack_on_this_machine,
)

__all__ = [
    "MAX_RECIPE_BYTES",
    "Component",
    "ComponentOptions",
    "Package",
    "install_on_this_machine",
    "package_bundle",
    "unpack_on_this_machine",
]
