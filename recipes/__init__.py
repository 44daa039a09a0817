"""Greengrass recipe templates and the packaging that fills them (build host side)."""

from .package import MAX_RECIPE_BYTES, ComponentOptions, Package, package_bundle

__all__ = ["MAX_RECIPE_BYTES", "ComponentOptions", "Package", "package_bundle"]
