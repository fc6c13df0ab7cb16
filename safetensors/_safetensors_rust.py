"""Upstream's extension module name, kept so that ``from safetensors._safetensors_rust import
SafetensorError`` (and pickled SafetensorError instances) keep working. The OSError
subclasses here are what opening a file raises (``FileNotFoundError`` with upstream's
message as ``str()``); they are subclasses of the builtins of the same name."""
from ._safetensors_c import (  # noqa: F401
    FileNotFoundError, IsADirectoryError, NotADirectoryError, OSError, PermissionError, SafetensorError,
    SafetensorIndexError, SafetensorIOError, TensorSpec, __version__, deserialize, safe_open)
from . import _safe_open_handle, serialize, serialize_file  # noqa: F401,E402  (written in Python there)
