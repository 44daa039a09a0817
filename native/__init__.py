"""Hand-written C compiled into every model library: the ABI header and the backend adapters.

Nothing here runs in Python; the package exists so that the header ships with the runtime,
which reads its cffi declarations from it (see ``edgeboost.runtime.native``).
"""
