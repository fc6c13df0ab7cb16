"""TensorFlow helpers for safetensors: save and load ``dict[str, tf.Tensor]``.

tensorflow is imported only when loading.  The caller's dict is never modified.

Loading: ``_from_numpy`` is the one NumPy -> TensorFlow conversion, used by
``load``/``load_file`` here and by ``safe_open(framework="tf")`` (the C
extension calls it).  A C-contiguous buffer at a 64-byte-aligned address is
imported through DLPack without a copy (bfloat16 as a uint16 import re-typed by
``tf.bitcast``, which shares the buffer); anything else is copied once, into
an aligned buffer imported the same way (float8, which ``tf.bitcast`` does not
take, by ``tf.convert_to_tensor``).  TensorFlow accepts a misaligned DLPack import and
aborts the process on the first operation on it, so it never gets one.
"""

import os
from typing import Dict, Optional, Union

import numpy as np

from safetensors import numpy as _st_numpy
from safetensors import safe_open
from safetensors._safetensors_c import _set_framework_converter

__all__ = ["save", "save_file", "load", "load_file"]

_ALIGNMENT = 64   # TensorFlow's (Eigen's) required buffer alignment
# dtypes NumPy exports through DLPack (ml_dtypes' bfloat16/float8 are not).
_DLPACK_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64", "complex64"]
)


def _to_numpy(tensors: Dict) -> Dict[str, np.ndarray]:
    if not isinstance(tensors, dict):
        raise TypeError(f"Expected a dict of [str, tf.Tensor] but received {type(tensors)}")
    out = {}
    for k, v in tensors.items():
        out[k] = v.numpy() if hasattr(v, "numpy") and not isinstance(v, np.ndarray) else np.asarray(v)
    return out


def _zero_copy(tf, array: np.ndarray):
    """The DLPack import of ``array``, or None where that is not possible."""
    if (
        array.size == 0
        or not array.flags.c_contiguous
        or not array.flags.writeable
        or array.ctypes.data % _ALIGNMENT != 0
    ):
        return None
    if array.dtype.name in _DLPACK_DTYPES:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    if array.dtype.name == "bfloat16":
        bits = tf.experimental.dlpack.from_dlpack(array.view(np.uint16).__dlpack__())
        return tf.bitcast(bits, tf.bfloat16)
    return None


def _aligned_copy(array: np.ndarray) -> np.ndarray:
    """``array`` copied (one memcpy, or a gather for strided slices) into a fresh
    64-byte-aligned, C-contiguous buffer."""
    buffer = np.empty(array.nbytes + _ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % _ALIGNMENT
    out = buffer[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    np.copyto(out, array)
    return out


def _from_numpy(array: np.ndarray):
    """One NumPy array -> tf.Tensor: zero-copy where aligned, else one copy
    (into an aligned buffer TensorFlow then takes over without copying again)."""
    import tensorflow as tf

    tensor = _zero_copy(tf, array)
    if tensor is None and array.size and (array.dtype.name in _DLPACK_DTYPES or array.dtype.name == "bfloat16"):
        tensor = _zero_copy(tf, _aligned_copy(array))
    return tensor if tensor is not None else tf.convert_to_tensor(array)


_set_framework_converter("tensorflow", _from_numpy)


def save(tensors: Dict, metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Serialize ``tensors`` (tf tensors) to the bytes of a safetensors file.

    Each tensor is converted to NumPy first and written by the NumPy writer
    (little-endian, C order).  The caller's dict is never modified.

    Args:
        tensors (dict[str, tf.Tensor]): the tensors to write; anything
            ``numpy.asarray`` accepts is taken too.
        metadata (dict[str, str] | None): the header's ``__metadata__``.

    Returns:
        bytes: the file, upstream 0.8.0's exact layout.

    Raises:
        TypeError: ``tensors`` is not a dict.
        SafetensorError: an unsupported dtype ("Unknown dtype ...").

    Example:
        >>> import tensorflow as tf
        >>> from safetensors.tensorflow import save
        >>> data = save({"w": tf.zeros((2, 3))}, metadata={"format": "tensorflow"})
    """
    return _st_numpy.save(_to_numpy(tensors), metadata=metadata)


def save_file(tensors: Dict, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (tf tensors) to ``filename`` atomically (temporary file + rename).

    Args:
        tensors (dict[str, tf.Tensor]): as for ``save``.
        filename (str | os.PathLike): the destination (only a regular file or
            nothing there is replaced).
        metadata (dict[str, str] | None): the header's ``__metadata__``.

    Returns:
        None

    Raises:
        TypeError, SafetensorError: as for ``save``; ``SafetensorIOError`` (an
            ``OSError``) for I/O errors, naming the path.

    Example:
        >>> import tensorflow as tf
        >>> from safetensors.tensorflow import save_file
        >>> save_file({"w": tf.zeros((2, 3))}, "model.safetensors")
    """
    _st_numpy.save_file(_to_numpy(tensors), filename, metadata=metadata)


def load(data: bytes):
    """Load tf tensors from the bytes of a safetensors file.

    One copy each (TensorFlow imports only writable buffers; ``data`` is not).

    Args:
        data (bytes): the file's content.

    Returns:
        dict[str, tf.Tensor]: in file (offset) order.

    Raises:
        SafetensorError: "Error while deserializing: ...".
        ImportError: ``tensorflow`` is not installed.

    Example:
        >>> import tensorflow as tf
        >>> from safetensors.tensorflow import load, save
        >>> tensors = load(save({"w": tf.zeros((2, 3))}))
    """
    return {k: _from_numpy(v) for k, v in _st_numpy.load(data).items()}


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap"):
    """Load every tensor of ``filename`` as tf tensors (file order).

    The same as ``safe_open(filename, framework="tf").get_tensors()``.
    Zero-copy (DLPack import) where a tensor is 64-byte aligned, otherwise
    one copy into an aligned buffer; bfloat16 likewise (re-typed with
    ``tf.bitcast``), float8 always one copy (``tf.convert_to_tensor``).

    Args:
        filename (str | os.PathLike): the file, or a URL (docs/remote.md; the
            filesystem's default settings: no ``storage_options`` here).
        backend (str): "mmap" (default: the file's private mapping) or
            "pread" (the bytes read once into a fresh buffer; the same
            copy rules then apply to that buffer).

    Returns:
        dict[str, tf.Tensor]: in file (offset) order; writes to them never
        reach the file.

    Raises:
        FileNotFoundError: the file does not exist (and other ``OSError``s).
        SafetensorError: an invalid file.
        ImportError: ``tensorflow`` is not installed.

    Example:
        >>> from safetensors.tensorflow import load_file
        >>> tensors = load_file("model.safetensors")
    """
    with safe_open(filename, framework="tf", backend=backend) as f:
        return f.get_tensors()
