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

__all__ = ["save", "save_file", "load", "load_file"]

_ALIGNMENT = 64   # what XLA's CPU client needs to alias a host buffer


def _to_numpy(tensors: Dict) -> Dict[str, np.ndarray]:
    if not isinstance(tensors, dict):
        raise TypeError(f"Expected a dict of [str, jax.Array] but received {type(tensors)}")
    return {k: np.asarray(v) for k, v in tensors.items()}


def _from_numpy(array: np.ndarray):
    """One NumPy array -> jax.Array: zero-copy where aligned, else one copy."""
    import jax

    if array.size and (not array.flags.c_contiguous or array.ctypes.data % _ALIGNMENT):
        # one copy, into a buffer device_put can then alias (its own copy is slower)
        buffer = np.empty(array.nbytes + _ALIGNMENT, np.uint8)
        start = -buffer.ctypes.data % _ALIGNMENT
        aligned = buffer[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
        np.copyto(aligned, array)
        array = aligned
    return jax.device_put(array)


def _converter():
    """Called once by ``safe_open(framework="flax")``: imports jax."""
    import jax  # noqa: F401

    return _from_numpy


def save(tensors: Dict, metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Serialize ``tensors`` (jax arrays) to the bytes of a safetensors file."""
    return _st_numpy.save(_to_numpy(tensors), metadata=metadata)


def save_file(tensors: Dict, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (jax arrays) to ``filename``."""
    _st_numpy.save_file(_to_numpy(tensors), filename, metadata=metadata)


def load(data: bytes):
    """Load jax arrays from the bytes of a safetensors file."""
    _converter()
    return {k: _from_numpy(v) for k, v in _st_numpy.load(data).items()}


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap"):
    """Load every tensor of ``filename`` as jax arrays (file order)."""
    with safe_open(filename, framework="flax", backend=backend) as f:
        return f.get_tensors()
