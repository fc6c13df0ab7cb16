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
from safetensors._safetensors_c import _set_framework_converter

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


_set_framework_converter("flax", _from_numpy)


def save(tensors: Dict, metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Serialize ``tensors`` (jax arrays) to the bytes of a safetensors file.

    Each tensor is converted to NumPy first and written by the NumPy writer
    (little-endian, C order).  The caller's dict is never modified.

    Args:
        tensors (dict[str, jax.Array]): the tensors to write; anything
            ``numpy.asarray`` accepts is taken too.
        metadata (dict[str, str] | None): the header's ``__metadata__``.

    Returns:
        bytes: the file, upstream 0.8.0's exact layout.

    Raises:
        TypeError: ``tensors`` is not a dict.
        SafetensorError: an unsupported dtype ("Unknown dtype ...").

    Example:
        >>> import jax.numpy as jnp
        >>> from safetensors.flax import save
        >>> data = save({"w": jnp.zeros((2, 3))}, metadata={"format": "flax"})
    """
    return _st_numpy.save(_to_numpy(tensors), metadata=metadata)


def save_file(tensors: Dict, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (jax arrays) to ``filename`` atomically (temporary file + rename).

    Args:
        tensors (dict[str, jax.Array]): as for ``save``.
        filename (str | os.PathLike): the destination (only a regular file or
            nothing there is replaced).
        metadata (dict[str, str] | None): the header's ``__metadata__``.

    Returns:
        None

    Raises:
        TypeError, SafetensorError: as for ``save``; ``SafetensorIOError`` (an
            ``OSError``) for I/O errors, naming the path.

    Example:
        >>> import jax.numpy as jnp
        >>> from safetensors.flax import save_file
        >>> save_file({"w": jnp.zeros((2, 3))}, "model.safetensors")
    """
    _st_numpy.save_file(_to_numpy(tensors), filename, metadata=metadata)


def load(data: bytes):
    """Load jax arrays from the bytes of a safetensors file.

    On the CPU backend ``jax.device_put`` may alias the bytes (zero-copy)
    where a tensor is 64-byte aligned; otherwise one copy.  Without
    ``jax_enable_x64``, 64-bit dtypes become 32-bit (a copy), as upstream's.

    Args:
        data (bytes): the file's content.

    Returns:
        dict[str, jax.Array]: in file (offset) order.

    Raises:
        SafetensorError: "Error while deserializing: ...".
        ImportError: ``jax`` is not installed.

    Example:
        >>> import jax.numpy as jnp
        >>> from safetensors.flax import load, save
        >>> tensors = load(save({"w": jnp.zeros((2, 3))}))
    """
    return {k: _from_numpy(v) for k, v in _st_numpy.load(data).items()}


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap"):
    """Load every tensor of ``filename`` as jax arrays (file order).

    The same as ``safe_open(filename, framework="flax").get_tensors()``.
    Zero-copy where a tensor is 64-byte aligned (``jax.device_put`` aliases
    the buffer), otherwise one copy into an aligned buffer; every dtype,
    bfloat16 and float8 included.  Without ``jax_enable_x64``, 64-bit
    dtypes become 32-bit (a conversion, hence a copy), as upstream's.

    Args:
        filename (str | os.PathLike): the file, or a URL (docs/remote.md; the
            filesystem's default settings: no ``storage_options`` here).
        backend (str): "mmap" (default: the file's private mapping) or
            "pread" (the bytes read once into a fresh buffer; the same
            copy rules then apply to that buffer).

    Returns:
        dict[str, jax.Array]: in file (offset) order; writes to them never
        reach the file.

    Raises:
        FileNotFoundError: the file does not exist (and other ``OSError``s).
        SafetensorError: an invalid file.
        ImportError: ``jax`` is not installed.

    Example:
        >>> from safetensors.flax import load_file
        >>> tensors = load_file("model.safetensors")
    """
    with safe_open(filename, framework="flax", backend=backend) as f:
        return f.get_tensors()
