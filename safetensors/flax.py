"""JAX/Flax helpers for safetensors: save and load ``dict[str, jax.Array]``.

jax is imported only when loading.  The caller's dict is never modified.
"""

import os
from typing import Dict, Optional, Union

import numpy as np

from safetensors import numpy as _st_numpy
from safetensors import safe_open

__all__ = ["save", "save_file", "load", "load_file"]


def _to_numpy(tensors: Dict) -> Dict[str, np.ndarray]:
    if not isinstance(tensors, dict):
        raise TypeError(f"Expected a dict of [str, jax.Array] but received {type(tensors)}")
    return {k: np.asarray(v) for k, v in tensors.items()}


def _to_jax(arrays: Dict[str, np.ndarray]):
    import jax.numpy as jnp

    return {k: jnp.array(v) for k, v in arrays.items()}


def _register_dtypes() -> None:
    # bfloat16/float8 numpy dtypes come from ml_dtypes (a jax dependency).
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        pass


def save(tensors: Dict, metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Serialize ``tensors`` (jax arrays) to the bytes of a safetensors file."""
    return _st_numpy.save(_to_numpy(tensors), metadata=metadata)


def save_file(tensors: Dict, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (jax arrays) to ``filename``."""
    _st_numpy.save_file(_to_numpy(tensors), filename, metadata=metadata)


def load(data: bytes):
    """Load jax arrays from the bytes of a safetensors file."""
    _register_dtypes()
    return _to_jax(_st_numpy.load(data))


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap"):
    """Load every tensor of ``filename`` as jax arrays (file order)."""
    _register_dtypes()
    with safe_open(filename, framework="np", backend=backend) as f:
        arrays = f.get_tensors()
    return _to_jax(arrays)
