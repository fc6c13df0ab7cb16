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
from safetensors._common import DLPACK_DTYPES, docstrings, numpy_dict
from safetensors._safetensors_c import _set_framework_converter

__all__ = ["save", "save_file", "load", "load_file"]

# numpy dtype name -> mlx.core dtype name (the same names in both).
_MLX_DTYPES = DLPACK_DTYPES | {"bfloat16"}


def _to_numpy(tensor) -> np.ndarray:
    if type(tensor).__module__.startswith("mlx") and str(getattr(tensor, "dtype", "")) == "mlx.core.bfloat16":
        # NumPy cannot take an mlx bfloat16 buffer: pass its bits.
        import ml_dtypes
        import mlx.core as mx

        return np.asarray(tensor.view(mx.uint16)).view(ml_dtypes.bfloat16)
    return np.asarray(tensor)


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


def save(tensors: Dict, metadata: Optional[Dict[str, str]] = None, *, alignment: Optional[int] = None,
         checksum: Optional[str] = None) -> bytes:
    return _st_numpy.save(numpy_dict(tensors, "mlx.core.array", _to_numpy), metadata=metadata, alignment=alignment,
                          checksum=checksum)


def save_file(tensors: Dict, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None, *,
              alignment: Optional[int] = None, checksum: Optional[str] = None,
              storage_options: Optional[dict] = None) -> None:
    _st_numpy.save_file(numpy_dict(tensors, "mlx.core.array", _to_numpy), filename, metadata=metadata,
                        alignment=alignment, checksum=checksum, storage_options=storage_options)


def load(data: bytes):
    return {k: _from_numpy(v) for k, v in _st_numpy.load(data).items()}


def load_file(filename: Union[str, os.PathLike], *, backend: Optional[str] = None,
              storage_options: Optional[dict] = None, verify: bool = False):
    with safe_open(filename, framework="mlx", backend=backend, storage_options=storage_options, verify=verify) as f:
        return f.get_tensors()


save.__doc__, save_file.__doc__, load.__doc__, load_file.__doc__ = docstrings(
    module="mlx", framework="mlx", package="mlx", kind="mlx.core.array", plural="mlx arrays",
    setup="import mlx.core as mx", zeros="mx.zeros((2, 3))",
    raises="    TypeError: a float8 tensor (MLX has no such dtype).\n",
    load_notes="One copy each (MLX owns its memory).  F64 stays float64; float8, which\n"
    "MLX has no dtype for, raises ``TypeError``.",
    load_file_notes="One copy each, always (MLX owns its memory: a plain copy of the bytes).\n"
    "F64 stays float64; float8, which MLX has no dtype for, raises ``TypeError``.",
)
