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
from safetensors._common import DLPACK_DTYPES, aligned_copy, docstrings, numpy_dict
from safetensors._safetensors_c import _set_framework_converter

__all__ = ["save", "save_file", "load", "load_file"]

_ALIGNMENT = 64   # TensorFlow's (Eigen's) required buffer alignment


def _to_numpy(tensor) -> np.ndarray:
    return tensor.numpy() if hasattr(tensor, "numpy") and not isinstance(tensor, np.ndarray) else np.asarray(tensor)


def _zero_copy(tf, array: np.ndarray):
    """The DLPack import of ``array``, or None where that is not possible."""
    if (
        array.size == 0
        or not array.flags.c_contiguous
        or not array.flags.writeable
        or array.ctypes.data % _ALIGNMENT != 0
    ):
        return None
    if array.dtype.name in DLPACK_DTYPES:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    if array.dtype.name == "bfloat16":
        bits = tf.experimental.dlpack.from_dlpack(array.view(np.uint16).__dlpack__())
        return tf.bitcast(bits, tf.bfloat16)
    return None


def _from_numpy(array: np.ndarray):
    """One NumPy array -> tf.Tensor: zero-copy where aligned, else one copy
    (into an aligned buffer TensorFlow then takes over without copying again)."""
    import tensorflow as tf

    tensor = _zero_copy(tf, array)
    if tensor is None and array.size and (array.dtype.name in DLPACK_DTYPES or array.dtype.name == "bfloat16"):
        tensor = _zero_copy(tf, aligned_copy(array, _ALIGNMENT))
    return tensor if tensor is not None else tf.convert_to_tensor(array)


_set_framework_converter("tensorflow", _from_numpy)


def save(tensors: Dict, metadata: Optional[Dict[str, str]] = None, *, alignment: Optional[int] = None,
         checksum: Optional[str] = None) -> bytes:
    return _st_numpy.save(numpy_dict(tensors, "tf.Tensor", _to_numpy), metadata=metadata, alignment=alignment,
                          checksum=checksum)


def save_file(tensors: Dict, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None, *,
              alignment: Optional[int] = None, checksum: Optional[str] = None,
              storage_options: Optional[dict] = None) -> None:
    _st_numpy.save_file(numpy_dict(tensors, "tf.Tensor", _to_numpy), filename, metadata=metadata, alignment=alignment,
                        checksum=checksum, storage_options=storage_options)


def load(data: bytes):
    return {k: _from_numpy(v) for k, v in _st_numpy.load(data).items()}


def load_file(filename: Union[str, os.PathLike], *, backend: Optional[str] = None,
              storage_options: Optional[dict] = None, verify: bool = False):
    with safe_open(filename, framework="tf", backend=backend, storage_options=storage_options, verify=verify) as f:
        return f.get_tensors()


save.__doc__, save_file.__doc__, load.__doc__, load_file.__doc__ = docstrings(
    module="tensorflow", framework="tf", package="tensorflow", kind="tf.Tensor", plural="tf tensors",
    setup="import tensorflow as tf", zeros="tf.zeros((2, 3))", raises="",
    load_notes="One copy each (TensorFlow imports only writable buffers; ``data`` is not).",
    load_file_notes="Zero-copy (DLPack import) where a tensor is 64-byte aligned, otherwise\n"
    "one copy into an aligned buffer; bfloat16 likewise (re-typed with\n"
    "``tf.bitcast``), float8 always one copy (``tf.convert_to_tensor``).",
)
