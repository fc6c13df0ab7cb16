"""MLX helpers for safetensors: save and load ``dict[str, mlx.core.array]``.

mlx is imported only when loading.  The caller's dict is never modified.

Loading: ``_from_numpy`` is the one NumPy -> MLX conversion, used by
``load``/``load_file`` here and by ``safe_open(framework="mlx")`` (the C
extension calls it).  MLX owns its memory, so every route copies once: a
C-contiguous buffer is copied as raw bytes (a plain memcpy).  Unlike
upstream, F64 stays float64 (``mx.array`` alone narrows it to float32), and
float8 tensors, which MLX has no dtype for, raise a TypeError.
"""

import os
from typing import Dict, Optional, Union

import numpy as np

from safetensors import numpy as _st_numpy
from safetensors import safe_open
from safetensors._safetensors_c import _set_framework_converter

__all__ = ["save", "save_file", "load", "load_file"]

# numpy dtype name -> mlx.core dtype name (the same names in both).
_MLX_DTYPES = frozenset(
    ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
     "float16", "bfloat16", "float32", "float64", "complex64"]
)


def _mx2np(tensors: Dict) -> Dict[str, np.ndarray]:
    if not isinstance(tensors, dict):
        raise TypeError(f"Expected a dict of [str, mlx.core.array] but received {type(tensors)}")
    out = {}
    for k, v in tensors.items():
        if type(v).__module__.startswith("mlx") and str(getattr(v, "dtype", "")) == "mlx.core.bfloat16":
            # NumPy cannot take an mlx bfloat16 buffer: pass its bits.
            import ml_dtypes
            import mlx.core as mx

            out[k] = np.asarray(v.view(mx.uint16)).view(ml_dtypes.bfloat16)
        else:
            out[k] = np.asarray(v)
    return out


def _from_numpy(array: np.ndarray):
    """One NumPy array -> mlx.core.array, copied once."""
    import mlx.core as mx

    name = array.dtype.name
    if name not in _MLX_DTYPES:
        raise TypeError(f"MLX has no dtype for {name} tensors")
    if name == "bfloat16":   # as its bits: mx.array cannot read NumPy's bfloat16
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        return mx.array(array.view(np.uint16)).view(mx.bfloat16)
    if any(step < 0 for step in array.strides):
        array = np.ascontiguousarray(array)   # MLX takes no negative strides
    return mx.array(array, dtype=mx.bool_ if name == "bool" else getattr(mx, name))


_set_framework_converter("mlx", _from_numpy)


def save(tensors: Dict, metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Serialize ``tensors`` (mlx arrays) to the bytes of a safetensors file.

    Each tensor is converted to NumPy first and written by the NumPy writer
    (little-endian, C order).  The caller's dict is never modified.

    Args:
        tensors (dict[str, mlx.core.array]): the tensors to write; anything
            ``numpy.asarray`` accepts is taken too.
        metadata (dict[str, str] | None): the header's ``__metadata__``.

    Returns:
        bytes: the file, upstream 0.8.0's exact layout.

    Raises:
        TypeError: ``tensors`` is not a dict.
        SafetensorError: an unsupported dtype ("Unknown dtype ...").

    Example:
        >>> import mlx.core as mx
        >>> from safetensors.mlx import save
        >>> data = save({"w": mx.zeros((2, 3))}, metadata={"format": "mlx"})
    """
    return _st_numpy.save(_mx2np(tensors), metadata=metadata)


def save_file(tensors: Dict, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (mlx arrays) to ``filename`` atomically (temporary file + rename).

    Args:
        tensors (dict[str, mlx.core.array]): as for ``save``.
        filename (str | os.PathLike): the destination (only a regular file or
            nothing there is replaced).
        metadata (dict[str, str] | None): the header's ``__metadata__``.

    Returns:
        None

    Raises:
        TypeError, SafetensorError: as for ``save``; ``SafetensorIOError`` (an
            ``OSError``) for I/O errors, naming the path.

    Example:
        >>> import mlx.core as mx
        >>> from safetensors.mlx import save_file
        >>> save_file({"w": mx.zeros((2, 3))}, "model.safetensors")
    """
    _st_numpy.save_file(_mx2np(tensors), filename, metadata=metadata)


def load(data: bytes):
    """Load mlx arrays from the bytes of a safetensors file.

    One copy each (MLX owns its memory).  F64 stays float64; float8, which
    MLX has no dtype for, raises ``TypeError``.

    Args:
        data (bytes): the file's content.

    Returns:
        dict[str, mlx.core.array]: in file (offset) order.

    Raises:
        SafetensorError: "Error while deserializing: ...".
        TypeError: a float8 tensor (MLX has no such dtype).
        ImportError: ``mlx`` is not installed.

    Example:
        >>> import mlx.core as mx
        >>> from safetensors.mlx import load, save
        >>> tensors = load(save({"w": mx.zeros((2, 3))}))
    """
    return {k: _from_numpy(v) for k, v in _st_numpy.load(data).items()}


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap"):
    """Load every tensor of ``filename`` as mlx arrays (file order).

    The same as ``safe_open(filename, framework="mlx").get_tensors()``.
    One copy each, always (MLX owns its memory: a plain copy of the bytes).
    F64 stays float64; float8, which MLX has no dtype for, raises ``TypeError``.

    Args:
        filename (str | os.PathLike): the file, or a URL (docs/remote.md; the
            filesystem's default settings: no ``storage_options`` here).
        backend (str): "mmap" (default: the file's private mapping) or
            "pread" (the bytes read once into a fresh buffer; the same
            copy rules then apply to that buffer).

    Returns:
        dict[str, mlx.core.array]: in file (offset) order; writes to them never
        reach the file.

    Raises:
        FileNotFoundError: the file does not exist (and other ``OSError``s).
        SafetensorError: an invalid file.
        TypeError: a float8 tensor (MLX has no such dtype).
        ImportError: ``mlx`` is not installed.

    Example:
        >>> from safetensors.mlx import load_file
        >>> tensors = load_file("model.safetensors")
    """
    with safe_open(filename, framework="mlx", backend=backend) as f:
        return f.get_tensors()
