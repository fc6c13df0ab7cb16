"""NumPy helpers for safetensors: save and load ``dict[str, numpy.ndarray]``.

Arrays of any memory layout are written in C order (Fortran-ordered, strided
and negative-stride views are copied to C order first) and in little-endian
byte order (big-endian arrays are byteswapped).  bfloat16 and float8 arrays
come from ``ml_dtypes``.
"""

import os
import sys
from typing import Dict, Optional, Union

import numpy as np

from safetensors import deserialize, safe_open, serialize, serialize_file

__all__ = ["save", "save_file", "load", "load_file"]

# header code -> numpy dtype name.  Plain numpy dtypes first; the ml_dtypes
# ones resolve only once ml_dtypes is importable (imported lazily).
_TYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "U64": np.uint64,
    "I32": np.int32,
    "U32": np.uint32,
    "I16": np.int16,
    "U16": np.uint16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": bool,
    "C64": np.complex64,
}

_ML_DTYPES = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}


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


def _prepare(tensor_dict: Dict[str, np.ndarray]) -> Dict[str, dict]:
    """The writer's input: the 0.7 dict form, whose "data" is the array itself
    (buffer protocol, no copy), which also keeps every array alive."""
    if not isinstance(tensor_dict, dict):
        raise TypeError(f"Expected a dict of [str, numpy.ndarray] but received {type(tensor_dict)}")
    specs = {}
    for k, arr in tensor_dict.items():
        if type(arr) is not np.ndarray:
            if isinstance(arr, np.generic):
                arr = np.asarray(arr)
            elif not isinstance(arr, np.ndarray):
                raise _NotAnArrayError(f"Key `{k}` is invalid, expected numpy.ndarray but received {type(arr)}")
        if not _is_little_endian(arr):
            # astype to the little-endian dtype copies in C order.
            arr = arr.astype(arr.dtype.newbyteorder("<"), order="C")
        elif not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        dtype = arr.dtype
        name = _DTYPE_NAMES.get(dtype)
        if name is None:
            name = _DTYPE_NAMES[dtype] = dtype.name
        specs[k] = {"dtype": name, "shape": arr.shape, "data": arr}
    return specs


def save(tensor_dict: Dict[str, np.ndarray], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Serialize ``tensor_dict`` to the bytes of a safetensors file."""
    return serialize(_prepare(tensor_dict), metadata=metadata)


def save_file(
    tensor_dict: Dict[str, np.ndarray],
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
) -> None:
    """Write ``tensor_dict`` to ``filename`` (atomically: temp file + rename)."""
    serialize_file(_prepare(tensor_dict), filename, metadata=metadata)


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
    """Load arrays from the bytes of a safetensors file (file order)."""
    return _view2np(deserialize(data))


def _register_ml_dtypes() -> None:
    if "ml_dtypes" not in sys.modules:
        try:
            import ml_dtypes  # noqa: F401  (registers bfloat16/float8 names)
        except ImportError:
            pass


def load_file(
    filename: Union[str, os.PathLike], *, backend: str = "mmap", storage_options: Optional[dict] = None
) -> Dict[str, np.ndarray]:
    """Load every array of ``filename`` (a path, or a URL: docs/remote.md; dict in file order)."""
    _register_ml_dtypes()
    with safe_open(filename, framework="np", backend=backend, storage_options=storage_options) as f:
        return f.get_tensors()
