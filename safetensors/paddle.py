"""PaddlePaddle helpers for safetensors: save and load ``dict[str, paddle.Tensor]``.

paddle is imported only inside the functions.  Saving hands each tensor's CPU
memory to the C writer (``TensorSpec`` with a data pointer); loading goes
through numpy and ``paddle.to_tensor`` (one copy), on every paddle version.
The caller's dict is never modified.
"""

import os
import sys
from typing import Dict, Optional, Union

from safetensors import TensorSpec, deserialize, safe_open, serialize, serialize_file

__all__ = ["save", "save_file", "load", "load_file"]

_SIZE_BY_NAME = {
    "bool": 1,
    "uint8": 1,
    "int8": 1,
    "int16": 2,
    "uint16": 2,
    "float16": 2,
    "bfloat16": 2,
    "int32": 4,
    "uint32": 4,
    "float32": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "complex64": 8,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}


def _dtype_name(dtype) -> str:
    # "paddle.float32" -> "float32"
    return str(dtype).split(".")[-1]


def _paddle_device(device) -> str:
    if device is None:
        return "cpu"
    if isinstance(device, int):
        return f"gpu:{device}"
    if device == "cuda":
        return "gpu:0"
    if isinstance(device, str) and device.startswith("cuda:"):
        return "gpu:" + device[len("cuda:"):]
    return device


def _flatten(tensors):
    import paddle

    if not isinstance(tensors, dict):
        raise ValueError(f"Expected a dict of [str, paddle.Tensor] but received {type(tensors)}")
    for k, v in tensors.items():
        if not isinstance(v, paddle.Tensor):
            raise ValueError(f"Key `{k}` is invalid, expected paddle.Tensor but received {type(v)}")
    specs = {}
    keepalive = []
    for k, v in tensors.items():
        is_contig = getattr(v, "is_contiguous", None)
        if is_contig is not None and not is_contig():
            raise ValueError(
                f"You are trying to save a non contiguous tensor: `{k}` which is not allowed. It either means you"
                " are trying to save tensors which are reference of each other in which case it's recommended to"
                " save only the full tensors, and reslice at load time, or simply call `.contiguous()` on your"
                " tensor to pack it before saving."
            )
        t = v
        if not t.place.is_cpu_place():
            t = t.cpu()
        name = _dtype_name(t.dtype)
        numel = 1
        for d in t.shape:
            numel *= int(d)
        if sys.byteorder != "little":
            # Byteswap through numpy on big-endian hosts.
            arr = t.numpy()
            arr = arr.astype(arr.dtype.newbyteorder("<"))
            keepalive.append(arr)
            specs[k] = TensorSpec(
                dtype=name,
                shape=list(t.shape),
                data_ptr=arr.__array_interface__["data"][0] if arr.nbytes else 0,
                data_len=int(arr.nbytes),
            )
            continue
        elem = t.element_size() if hasattr(t, "element_size") else _SIZE_BY_NAME[name]
        nbytes = numel * elem
        keepalive.append(t)
        specs[k] = TensorSpec(
            dtype=name, shape=[int(d) for d in t.shape], data_ptr=t.data_ptr() if nbytes else 0, data_len=nbytes
        )
    return specs, keepalive


def save(tensors, metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Serialize ``tensors`` (paddle tensors) to the bytes of a safetensors file."""
    specs, keepalive = _flatten(tensors)
    try:
        return serialize(specs, metadata=metadata)
    finally:
        del keepalive


def save_file(tensors, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (paddle tensors) to ``filename``."""
    specs, keepalive = _flatten(tensors)
    try:
        serialize_file(specs, filename, metadata=metadata)
    finally:
        del keepalive


def _np2paddle(arrays, device="cpu"):
    import paddle

    place = _paddle_device(device)
    return {k: paddle.to_tensor(v, place=place) for k, v in arrays.items()}


def load(data: bytes, device: str = "cpu"):
    """Load paddle tensors from the bytes of a safetensors file."""
    from safetensors import numpy as _st_numpy

    return _np2paddle(_st_numpy._view2np(deserialize(data)), device)


def load_file(filename: Union[str, os.PathLike], device="cpu", *, backend: str = "mmap"):
    """Load every tensor of ``filename`` as paddle tensors on ``device``."""
    from safetensors import numpy as _st_numpy

    _st_numpy._register_ml_dtypes()
    with safe_open(filename, framework="np", backend=backend) as f:
        arrays = f.get_tensors()
    return _np2paddle(arrays, device)
