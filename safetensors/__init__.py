"""safetensors, implemented in C: a drop-in for the upstream package (API level 0.8.0).

Framework modules (``safetensors.torch``, ``safetensors.numpy``, ...) are
imported on demand, as upstream does, so ``import safetensors`` pulls in
neither torch nor numpy. ``safe_open`` is the C handle for paths and URLs
alike: a URL is read through the byte source of ``safetensors.remote``,
registered here, as are ``_import_framework``, which imports the other
frameworks' modules (each registers its converter) for ``safe_open``, and
``safetensors.checkpoint``'s handle of several files (a directory, an index,
a list) and prefetch reader.
"""
import importlib

from ._safetensors_c import (SafetensorError, TensorSpec, __version__, _set_checkpoint_support,
                              _set_framework_importer, _set_source_opener, _set_verifier, deserialize,
                              safe_open)
from ._safetensors_c import serialize as _serialize
from ._safetensors_c import serialize_file as _local_serialize_file
from ._safetensors_c import _write_layout
from . import remote as _remote
from . import checkpoint as _checkpoint
from . import checksums as _checksums
from . import _verify

# The package each framework module converts to, imported when opening (an
# ImportError there if it is not installed).
_FRAMEWORK_PACKAGES = {"tensorflow": "tensorflow", "flax": "jax", "mlx": "mlx.core", "paddle": "paddle"}


def _import_framework(name):
    """Called once by the first ``safe_open(framework=name)`` for "tensorflow",
    "flax", "mlx" or "paddle": imports the framework and ``safetensors.<name>``,
    which registers its converter (``_set_framework_converter``)."""
    importlib.import_module(_FRAMEWORK_PACKAGES[name])
    importlib.import_module(f"safetensors.{name}")


_set_source_opener(_remote.open_source)
_set_framework_importer(_import_framework)
_set_checkpoint_support(_checkpoint.open_checkpoint, _checkpoint.prefetch_for_handle)
_set_verifier(_verify.Verifier)

__all__ = ["SafetensorError", "TensorSpec", "__version__", "deserialize", "safe_open", "serialize", "serialize_file"]


def _safe_open_handle(f, framework, device="cpu", *, backend=None):
    """Like ``safe_open``, for the file behind an open file object ``f`` (its ``.name``)."""
    if not hasattr(f, "fileno"):
        raise TypeError("_safe_open_handle expects a file object with fileno()")
    return safe_open(f.name, framework, device, backend=backend)


def _digested(tensor_dict, metadata, checksum):
    """``metadata`` with the digests (``checksum``: None, "sha256" or "xxh3_128") of the tensors
    ``tensor_dict`` holds, hashed over the bytes the writer writes, in its file order
    (docs/integrity.md). Input the writer refuses is left for it to refuse."""
    if checksum is None:
        return metadata
    _checksums.new_hasher(checksum)  # an unknown algorithm: ValueError before anything is hashed
    if not isinstance(tensor_dict, dict) or not isinstance(metadata, (dict, type(None))):
        return metadata
    names = list(tensor_dict)
    specs = [_remote._spec_bytes(value) for value in tensor_dict.values()]  # (header dtype, shape, bytes)
    _, order = _write_layout([(n, code, shape, view.nbytes) for n, (code, shape, view) in zip(names, specs)], None)
    tensor_digests, data_digest = _checksums.digest_data(checksum, [specs[i][2] for i in order])
    return _checksums.with_digests(metadata, checksum, [names[i] for i in order], tensor_digests, data_digest)


def serialize(tensor_dict, metadata=None, *, alignment=None, checksum=None):
    return _serialize(tensor_dict, metadata=_digested(tensor_dict, metadata, checksum), alignment=alignment)


def serialize_file(tensor_dict, filename, metadata=None, *, alignment=None, checksum=None, storage_options=None):
    metadata = _digested(tensor_dict, metadata, checksum)
    if _remote.is_remote(filename):
        return _remote.save_to_url(tensor_dict, filename, metadata, storage_options=storage_options,
                                   alignment=alignment)
    if storage_options is not None:  # as safe_open refuses it for a path
        raise ValueError("storage_options is for URLs and fsspec file objects (docs/remote.md), not a local path")
    return _local_serialize_file(tensor_dict, _remote.local_path(filename), metadata=metadata, alignment=alignment)


_CHECKSUM_DOC = (
    "    checksum (str | None): None (default): no digests; \"sha256\" (tamper\n"
    "        evidence) or \"xxh3_128\" (fast, for corruption; needs the xxhash\n"
    "        package): the digest of every tensor's bytes and of the whole data\n"
    "        section recorded in \"__metadata__\" (docs/integrity.md).\n"
)
serialize.__doc__ = (
    "serialize(tensor_dict, metadata=None, *, alignment=None, checksum=None)\n\n"
    + _serialize.__doc__.split("--\n\n", 1)[-1]
    .replace("    alignment (int | None)", _CHECKSUM_DOC + "    alignment (int | None)")
    .replace("    ValueError: an alignment", "    ValueError: an unknown checksum, an alignment")
)
serialize_file.__doc__ = (
    "serialize_file(tensor_dict, filename, metadata=None, *, alignment=None, checksum=None, storage_options=None)\n\n"
    + _local_serialize_file.__doc__.split("--\n\n", 1)[-1].replace(
        "    filename (str | os.PathLike): the destination.",
        "    filename (str | os.PathLike): the destination, or a URL uploaded part by\n"
        "        part (docs/remote.md).\n"
        "    storage_options (dict | None): options of the remote filesystem (URLs only).",
    ).replace("    alignment (int | None): as for serialize.\n", "    alignment, checksum: as for serialize.\n")
)
