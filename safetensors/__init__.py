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
    def __new__(cls, filename, *args, storage_options=None, **kwargs):
        if _remote.is_remote(filename):
            return _remote.RemoteSafeOpen(filename, *args, storage_options=storage_options, **kwargs)
        return _local_safe_open(_remote.local_path(filename), *args, **kwargs)


# A path opens the C handle, a URL a RemoteSafeOpen; both have these methods,
# so help(safe_open) shows the C type's documentation of each.
safe_open.__doc__ = (
    "safe_open(filename, framework, device='cpu', *, backend='mmap', storage_options=None)\n\n"
    + _local_safe_open.__doc__.replace(
        "    filename (str | os.PathLike): the file.",
        "    filename (str | os.PathLike): the file, or a URL / fsspec file object\n"
        "        (s3://, https://, hf://, ...) read with ranged requests (docs/remote.md).\n"
        "    storage_options (dict | None): options of the remote filesystem (URLs only).",
    )
)
for _method in ("__enter__", "__exit__", "keys", "offset_keys", "metadata", "get_tensor",
                "get_tensors", "get_slice"):
    setattr(safe_open, _method, getattr(_local_safe_open, _method))
del _method


def serialize_file(tensor_dict, filename, metadata=None, *, storage_options=None):
    if _remote.is_remote(filename):
        return _remote.save_to_url(tensor_dict, filename, metadata, storage_options=storage_options)
    return _local_serialize_file(tensor_dict, _remote.local_path(filename), metadata=metadata)


serialize_file.__doc__ = (
    "serialize_file(tensor_dict, filename, metadata=None, *, storage_options=None)\n\n"
    + _local_serialize_file.__doc__.split("--\n\n", 1)[-1].replace(
        "    filename (str | os.PathLike): the destination.",
        "    filename (str | os.PathLike): the destination, or a URL uploaded part by\n"
        "        part (docs/remote.md).\n"
        "    storage_options (dict | None): options of the remote filesystem (URLs only).",
    )
)
