"""Device side of edgeboost: load a compiled bundle with cffi and predict. Needs only cffi.

>>> from edgeboost.runtime import Model
>>> model = Model.load("build/wine")
>>> model.predict([{"alcohol": 11.4, ...}])
"""

from .exceptions import (
    BundleError,
    EdgeboostError,
    FeatureNameError,
    InputError,
    IntegrityError,
    LibraryLoadError,
    ManifestError,
    MetadataMismatchError,
    NativeError,
    NoLibraryForPlatformError,
    RequestError,
)
from .manifest import Manifest
from .model import Model

__all__ = [
    "BundleError",
    "EdgeboostError",
    "FeatureNameError",
    "InputError",
    "IntegrityError",
    "LibraryLoadError",
    "Manifest",
    "ManifestError",
    "MetadataMismatchError",
    "Model",
    "NativeError",
    "NoLibraryForPlatformError",
    "RequestError",
]
