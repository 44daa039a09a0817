"""edgeboost: XGBoost models compiled into small, verified native libraries for IoT devices.

The pipeline lives in subpackages: ``edgeboost.compile`` (build host), ``edgeboost.runtime``
(device, needs only cffi). ``Model`` is re-exported here for convenience.
"""

from edgeboost.runtime import Model

__version__ = "0.1.0"
__all__ = ["Model", "__version__"]
