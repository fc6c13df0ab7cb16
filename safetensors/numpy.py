"""NumPy helpers for safetensors: save and load ``dict[str, numpy.ndarray]``.

Arrays of any memory layout are written in C order (Fortran-ordered, strided
and negative-stride views are copied to C order first) and in little-endian
byte order (big-endian arrays are byteswapped).  bfloat16 and float8 arrays
come from ``ml_dtypes``.
"""

import os
import sys
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from safetensors import TensorSpec, _safetensors_c, deserialize, safe_open, serialize, serialize_file
from safetensors._common import little_endian

__all__ = ["save", "save_file", "load", "load_file"]

# header code -> numpy dtype name, from the extension's dtype table
# (docs/format.md §3): stock numpy dtypes, and the ml_dtypes ones, which
# resolve only once ml_dtypes is importable (imported lazily).
_TYPES = {code: name for code, _, name, source, _ in _safetensors_c._dtype_table() if source == "numpy"}
_ML_DTYPES = {code: name for code, _, name, source, _ in _safetensors_c._dtype_table() if source == "ml_dtypes"}


class _NotAnArrayError(TypeError, AttributeError):
    """A value that is not a numpy array was given to ``save``.

    A TypeError; also an AttributeError because upstream 0.8.0 raised
    AttributeError there, and callers may catch that."""


def _is_little_endian(tensor: np.ndarray) -> bool:
    byteorder = tensor.dtype.byteorder
    if byteorder == "=":
        return sys.byteorder == "little"
    if byteorder == "|" or byteorder == "<":
        return True
    if byteorder == ">":
        return False
    raise ValueError(f"Unexpected byte order {byteorder}")


def _getdtype(dtype_str: str) -> np.dtype:
    """Header dtype code -> little-endian numpy dtype (KeyError if unknown)."""
    if dtype_str in _TYPES:
        return np.dtype(_TYPES[dtype_str]).newbyteorder("<")
    name = _ML_DTYPES[dtype_str]
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError(f"Loading {dtype_str} tensors with numpy requires the `ml_dtypes` package") from None
    return np.dtype(getattr(ml_dtypes, name))


_DTYPE_NAMES: Dict[np.dtype, str] = {}


def _prepare(tensor_dict: Dict[str, np.ndarray]) -> Tuple[Dict[str, TensorSpec], List[np.ndarray]]:
    """The writer's input: one TensorSpec per array (a pointer to its
    little-endian, C-ordered bytes), and the arrays those pointers point
    into, which the caller keeps alive until the write returns."""
    if not isinstance(tensor_dict, dict):
        raise TypeError(f"Expected a dict of [str, numpy.ndarray] but received {type(tensor_dict)}")
    specs = {}
    keep = []
    for k, arr in tensor_dict.items():
        if type(arr) is not np.ndarray:
            if isinstance(arr, np.generic):
                arr = np.asarray(arr)
            elif not isinstance(arr, np.ndarray):
                raise _NotAnArrayError(f"Key `{k}` is invalid, expected numpy.ndarray but received {type(arr)}")
        arr = little_endian(arr)
        dtype = arr.dtype
        name = _DTYPE_NAMES.get(dtype)
        if name is None:
            name = _DTYPE_NAMES[dtype] = dtype.name
        keep.append(arr)
        specs[k] = TensorSpec(dtype=name, shape=arr.shape, data_len=arr.nbytes,
                              data_ptr=arr.__array_interface__["data"][0] if arr.nbytes else 0)
    return specs, keep


def save(tensor_dict: Dict[str, np.ndarray], metadata: Optional[Dict[str, str]] = None, *,
         alignment: Optional[int] = None, checksum: Optional[str] = None) -> bytes:
    """Serialize ``tensor_dict`` to the bytes of a safetensors file.

    Args:
        tensor_dict (dict[str, numpy.ndarray]): arrays of any memory layout and
            byte order (written little-endian, C order); bfloat16/float8 through
            ml_dtypes.
        metadata (dict[str, str] | None): the header's ``__metadata__``.
        alignment (int | None): None (default): upstream's layout; else a power
            of two from 8 to 4096 the data section starts at a multiple of
            (docs/integrity.md).
        checksum (str | None): None (default), "sha256" or "xxh3_128": the
            digests of every tensor and of the data section, recorded in
            ``__metadata__`` (docs/integrity.md).

    Returns:
        bytes: the file, upstream 0.8.0's exact layout (by default).

    Raises:
        TypeError: not a dict, or a value that is not an array.
        ValueError: a bad alignment or checksum.
        SafetensorError: an unsupported dtype ("Unknown dtype ...").

    Example:
        >>> from safetensors.numpy import save
        >>> data = save({"a": np.zeros((2, 2), np.float32)})
    """
    specs, keep = _prepare(tensor_dict)  # keep: the arrays specs point into, alive until written
    return serialize(specs, metadata=metadata, alignment=alignment, checksum=checksum)


def save_file(tensor_dict: Dict[str, np.ndarray], filename: Union[str, os.PathLike],
              metadata: Optional[Dict[str, str]] = None, *, alignment: Optional[int] = None,
              checksum: Optional[str] = None, storage_options: Optional[dict] = None) -> None:
    """Write ``tensor_dict`` to ``filename`` atomically (temporary file + rename).

    Args:
        tensor_dict (dict[str, numpy.ndarray]): as for ``save``.
        filename (str | os.PathLike): the destination (only a regular file or
            nothing there is replaced), or a URL uploaded part by part
            (docs/remote.md).
        metadata (dict[str, str] | None): the header's ``__metadata__``.
        alignment, checksum: as for ``save``.
        storage_options (dict | None): options of the remote filesystem (URLs only).

    Returns:
        None

    Raises:
        TypeError, SafetensorError: as for ``save``; ``SafetensorIOError`` (an
            ``OSError``) for I/O errors, naming the path.

    Example:
        >>> from safetensors.numpy import save_file
        >>> save_file({"a": np.zeros(3)}, "arrays.safetensors", metadata={"k": "v"})
    """
    specs, keep = _prepare(tensor_dict)  # keep: the arrays specs point into, alive until written
    serialize_file(specs, filename, metadata=metadata, alignment=alignment, checksum=checksum,
                   storage_options=storage_options)


def _view2np(safeview) -> Dict[str, np.ndarray]:
    result = {}
    for k, v in safeview:
        dtype = _getdtype(v["dtype"])
        data = v["data"]
        if len(data) == 0:
            arr = np.zeros(v["shape"], dtype=dtype)
        else:
            arr = np.frombuffer(data, dtype=dtype).reshape(v["shape"])
        result[k] = arr
    return result


def load(data: bytes) -> Dict[str, np.ndarray]:
    """Load arrays from the bytes of a safetensors file.

    Args:
        data (bytes): the file's content.

    Returns:
        dict[str, numpy.ndarray]: in file (offset) order.

    Raises:
        SafetensorError: "Error while deserializing: ...".

    Example:
        >>> arrays = load(save({"a": np.zeros(3)}))
    """
    return _safetensors_c._deserialize_tensors(data, "np")


def load_file(filename: Union[str, os.PathLike], *, backend: Optional[str] = None,
              storage_options: Optional[dict] = None, verify: bool = False) -> Dict[str, np.ndarray]:
    """Load every array of ``filename``.

    Args:
        filename (str | os.PathLike): the file, or a URL (docs/remote.md).
        backend (str | None): "mmap" (large arrays are zero-copy views of a
            private mapping of their own, small ones views of one mapping
            shared by this call) or "pread" (all read into memory the process
            owns). None (default): "pread" on network and FUSE file systems
            and for a file mostly not in the page cache, else "mmap"
            (docs/design.md, "Choosing how a file is read").
        storage_options (dict | None): options for the remote filesystem
            (URLs only, e.g. {"anon": True} for s3fs).
        verify (bool): check every tensor against the digest the file
            records (docs/integrity.md); a file without digests and a
            tensor that fails raise SafetensorError.

    Returns:
        dict[str, numpy.ndarray]: in file (offset) order; writable, no two share
        memory, writes never reach the file.

    Raises:
        FileNotFoundError: the file does not exist (and other ``OSError``s).
        SafetensorError: an invalid file; with verify=True, no digests or a mismatch.

    Example:
        >>> from safetensors.numpy import load_file
        >>> arrays = load_file("arrays.safetensors")
    """
    with safe_open(filename, framework="np", backend=backend, storage_options=storage_options, verify=verify) as f:
        return f.get_tensors()
