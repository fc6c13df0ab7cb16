from ._safetensors_c import (
    FileNotFoundError as FileNotFoundError,
    IsADirectoryError as IsADirectoryError,
    NotADirectoryError as NotADirectoryError,
    OSError as OSError,
    PermissionError as PermissionError,
    PySafeSlice as PySafeSlice,
    SafetensorError as SafetensorError,
    SafetensorIndexError as SafetensorIndexError,
    SafetensorIOError as SafetensorIOError,
    TensorSpec as TensorSpec,
    __version__ as __version__,
    deserialize as deserialize,
    safe_open as safe_open,
)
from . import _safe_open_handle as _safe_open_handle
from . import serialize as serialize
from . import serialize_file as serialize_file
