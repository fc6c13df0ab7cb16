"""JAX/Flax helpers for safetensors: save and load ``dict[str, jax.Array]``.

jax is imported only when loading.  The caller's dict is never modified.

Loading: ``_from_numpy`` is the one NumPy -> JAX conversion, used by
``load``/``load_file`` here and by ``safe_open(framework="flax")`` (the C
extension calls it).  ``jax.device_put`` on the CPU backend aliases a
C-contiguous NumPy buffer at a 64-byte-aligned address (no copy, every dtype,
bfloat16 and float8 included); anything else is copied once by NumPy into an
aligned buffer that ``device_put`` then aliases.  Like upstream's
``jnp.array``, 64-bit dtypes become 32-bit unless ``jax_enable_x64`` is set
(that is a conversion, hence a copy).
"""

import os
from typing import Dict, Optional, Union

import numpy as np

from safetensors import numpy as _st_numpy
from safetensors import safe_open
from safetensors._common import aligned_copy, docstrings, numpy_dict
from safetensors._safetensors_c import _set_framework_converter

__all__ = ["save", "save_file", "load", "load_file"]

_ALIGNMENT = 64   # what XLA's CPU client needs to alias a host buffer


def _from_numpy(array: np.ndarray):
    """One NumPy array -> jax.Array: zero-copy where aligned, else one copy."""
    import jax

    if array.size and (not array.flags.c_contiguous or array.ctypes.data % _ALIGNMENT):
        array = aligned_copy(array, _ALIGNMENT)  # device_put then aliases it (its own copy is slower)
    return jax.device_put(array)


_set_framework_converter("flax", _from_numpy)


def save(tensors: Dict, metadata: Optional[Dict[str, str]] = None, *, alignment: Optional[int] = None,
         checksum: Optional[str] = None) -> bytes:
    return _st_numpy.save(numpy_dict(tensors, "jax.Array"), metadata=metadata, alignment=alignment,
                          checksum=checksum)


def save_file(tensors: Dict, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None, *,
              alignment: Optional[int] = None, checksum: Optional[str] = None,
              storage_options: Optional[dict] = None) -> None:
    _st_numpy.save_file(numpy_dict(tensors, "jax.Array"), filename, metadata=metadata, alignment=alignment,
                        checksum=checksum, storage_options=storage_options)


def load(data: bytes):
    return {k: _from_numpy(v) for k, v in _st_numpy.load(data).items()}


def load_file(filename: Union[str, os.PathLike], *, backend: Optional[str] = None,
              storage_options: Optional[dict] = None, verify: bool = False):
    with safe_open(filename, framework="flax", backend=backend, storage_options=storage_options, verify=verify) as f:
        return f.get_tensors()


save.__doc__, save_file.__doc__, load.__doc__, load_file.__doc__ = docstrings(
    module="flax", framework="flax", package="jax", kind="jax.Array", plural="jax arrays",
    setup="import jax.numpy as jnp", zeros="jnp.zeros((2, 3))", raises="",
    load_notes="On the CPU backend ``jax.device_put`` may alias the bytes (zero-copy)\n"
    "where a tensor is 64-byte aligned; otherwise one copy.  Without\n"
    "``jax_enable_x64``, 64-bit dtypes become 32-bit (a copy), as upstream's.",
    load_file_notes="Zero-copy where a tensor is 64-byte aligned (``jax.device_put`` aliases\n"
    "the buffer), otherwise one copy into an aligned buffer; every dtype,\n"
    "bfloat16 and float8 included.  Without ``jax_enable_x64``, 64-bit\n"
    "dtypes become 32-bit (a conversion, hence a copy), as upstream's.",
)
