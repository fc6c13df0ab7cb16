from ._safetensors_c import (
    SafetensorError as SafetensorError,
    TensorSpec as TensorSpec,
    __version__ as __version__,
    _safe_open_handle as _safe_open_handle,
    deserialize as deserialize,
    safe_open as safe_open,
    serialize as serialize,
    serialize_file as serialize_file,
)

__all__ = ["SafetensorError", "TensorSpec", "__version__", "deserialize", "safe_open", "serialize", "serialize_file"]
