from typing import Any, Dict, Optional

from ._safetensors_c import (
    SafetensorError as SafetensorError,
    TensorSpec as TensorSpec,
    __version__ as __version__,
    _Device,
    _PathLike,
    deserialize as deserialize,
)
from ._safetensors_c import safe_open as safe_open

def _safe_open_handle(f: Any, framework: str, device: _Device = "cpu", *, backend: Optional[str] = None) -> safe_open: ...
def serialize(
    tensor_dict: Dict[str, TensorSpec],
    metadata: Optional[Dict[str, str]] = None,
    *,
    alignment: Optional[int] = None,
    checksum: Optional[str] = None,
) -> bytes: ...
def serialize_file(
    tensor_dict: Dict[str, TensorSpec],
    filename: _PathLike,
    metadata: Optional[Dict[str, str]] = None,
    *,
    alignment: Optional[int] = None,
    checksum: Optional[str] = None,
    storage_options: Optional[Dict[str, Any]] = None,
) -> None: ...

__all__ = ["SafetensorError", "TensorSpec", "__version__", "deserialize", "safe_open", "serialize", "serialize_file"]
