from typing import Any, Dict, Optional

from ._safetensors_c import (
    SafetensorError as SafetensorError,
    TensorSpec as TensorSpec,
    __version__ as __version__,
    _Device,
    _PathLike,
    _safe_open_handle as _safe_open_handle,
    deserialize as deserialize,
    serialize as serialize,
)
from ._safetensors_c import safe_open as _local_safe_open

# A path opens the C handle; a URL or fsspec file object a remote handle with
# the same methods (safetensors.remote).
class safe_open(_local_safe_open):
    def __init__(
        self,
        filename: _PathLike,
        framework: str,
        device: _Device = "cpu",
        *,
        backend: str = "mmap",
        storage_options: Optional[Dict[str, Any]] = None,
    ) -> None: ...

def serialize_file(
    tensor_dict: Dict[str, TensorSpec],
    filename: _PathLike,
    metadata: Optional[Dict[str, str]] = None,
    *,
    storage_options: Optional[Dict[str, Any]] = None,
) -> None: ...

__all__ = ["SafetensorError", "TensorSpec", "__version__", "deserialize", "safe_open", "serialize", "serialize_file"]
