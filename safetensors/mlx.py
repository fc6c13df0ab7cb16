"""MLX helpers for safetensors: save and load ``dict[str, mlx.core.array]``.

mlx is imported only when loading.  The caller's dict is never modified.
bfloat16 is not supported on this path (numpy conversion of mlx bf16 arrays).
"""

import os
from typing import Dict, Optional, Union

import numpy as np

from safetensors import numpy as _st_numpy
from safetensors import safe_open

__all__ = ["save", "save_file", "load", "load_file"]


def _mx2np(tensors: Dict) -> Dict[str, np.ndarray]:
    if not isinstance(tensors, dict):
        raise TypeError(f"Expected a dict of [str, mlx.core.array] but received {type(tensors)}")
    return {k: np.asarray(v) for k, v in tensors.items()}


def _np2mx(arrays: Dict[str, np.ndarray]):
    import mlx.core as mx

    return {k: mx.array(v) for k, v in arrays.items()}


def save(tensors: Dict, metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Serialize ``tensors`` (mlx arrays) to the bytes of a safetensors file."""
    return _st_numpy.save(_mx2np(tensors), metadata=metadata)


def save_file(tensors: Dict, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (mlx arrays) to ``filename``."""
    _st_numpy.save_file(_mx2np(tensors), filename, metadata=metadata)


def load(data: bytes):
    """Load mlx arrays from the bytes of a safetensors file."""
    return _np2mx(_st_numpy.load(data))


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap"):
    """Load every tensor of ``filename`` as mlx arrays (file order)."""
    with safe_open(filename, framework="np", backend=backend) as f:
        arrays = f.get_tensors()
    return _np2mx(arrays)
