"""TensorFlow helpers for safetensors: save and load ``dict[str, tf.Tensor]``.

tensorflow is imported only when loading.  The caller's dict is never modified.
"""

import os
from typing import Dict, Optional, Union

import numpy as np

from safetensors import numpy as _st_numpy
from safetensors import safe_open

__all__ = ["save", "save_file", "load", "load_file"]


def _to_numpy(tensors: Dict) -> Dict[str, np.ndarray]:
    if not isinstance(tensors, dict):
        raise TypeError(f"Expected a dict of [str, tf.Tensor] but received {type(tensors)}")
    out = {}
    for k, v in tensors.items():
        out[k] = v.numpy() if hasattr(v, "numpy") and not isinstance(v, np.ndarray) else np.asarray(v)
    return out


def _to_tf(arrays: Dict[str, np.ndarray]):
    import tensorflow as tf

    return {k: tf.convert_to_tensor(v) for k, v in arrays.items()}


def save(tensors: Dict, metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Serialize ``tensors`` (tf tensors) to the bytes of a safetensors file."""
    return _st_numpy.save(_to_numpy(tensors), metadata=metadata)


def save_file(tensors: Dict, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (tf tensors) to ``filename``."""
    _st_numpy.save_file(_to_numpy(tensors), filename, metadata=metadata)


def load(data: bytes):
    """Load tf tensors from the bytes of a safetensors file."""
    return _to_tf(_st_numpy.load(data))


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap"):
    """Load every tensor of ``filename`` as tf tensors (file order)."""
    with safe_open(filename, framework="np", backend=backend) as f:
        arrays = f.get_tensors()
    return _to_tf(arrays)
