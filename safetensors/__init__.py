"""safetensors, implemented in C: a drop-in for the upstream package (API level 0.8.0).

Framework modules (``safetensors.torch``, ``safetensors.numpy``, ...) are
imported on demand, as upstream does, so ``import safetensors`` pulls in
neither torch nor numpy.
"""
from ._safetensors_c import (
    SafetensorError,
    TensorSpec,
    __version__,
    _safe_open_handle,
    deserialize,
    safe_open,
    serialize,
    serialize_file,
)

__all__ = [
    "SafetensorError",
    "TensorSpec",
    "__version__",
    "deserialize",
    "safe_open",
    "serialize",
    "serialize_file",
]
