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
    serialize,
)
from ._safetensors_c import safe_open as _local_safe_open
from ._safetensors_c import serialize_file as _local_serialize_file
from . import remote as _remote

__all__ = [
    "SafetensorError",
    "TensorSpec",
    "__version__",
    "deserialize",
    "safe_open",
    "serialize",
    "serialize_file",
]


class _SafeOpenType(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, (_local_safe_open, _remote.RemoteSafeOpen))


class safe_open(metaclass=_SafeOpenType):
    """safe_open(filename, framework, device='cpu', *, backend='mmap', storage_options=None)

    Opens a safetensors file lazily: only the header is read. ``filename`` is
    a path, or a URL / fsspec file object (s3://, https://, hf://, ...): those
    are read with ranged requests (safetensors.remote, docs/remote.md)."""

    def __new__(cls, filename, *args, storage_options=None, **kwargs):
        if _remote.is_remote(filename):
            return _remote.RemoteSafeOpen(filename, *args, storage_options=storage_options, **kwargs)
        return _local_safe_open(_remote.local_path(filename), *args, **kwargs)


def serialize_file(tensor_dict, filename, metadata=None, *, storage_options=None):
    """Writes a safetensors file atomically (temporary file + rename), or
    uploads it part by part when ``filename`` is a URL (safetensors.remote)."""
    if _remote.is_remote(filename):
        return _remote.save_to_url(tensor_dict, filename, metadata, storage_options=storage_options)
    return _local_serialize_file(tensor_dict, _remote.local_path(filename), metadata=metadata)
