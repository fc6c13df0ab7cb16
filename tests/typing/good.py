"""User code that must type-check against the stubs (mypy: no errors)."""
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import numpy.typing as npt

from safetensors import SafetensorError, TensorSpec, deserialize, safe_open, serialize, serialize_file
from safetensors.numpy import load, load_file, save, save_file


def roundtrip(path: Path) -> Dict[str, npt.NDArray[Any]]:
    arrays = {"w": np.zeros((2, 3), np.float32)}
    save_file(arrays, path, metadata={"format": "np"})
    save_file(arrays, str(path))
    save_file(arrays, path, alignment=64, checksum="sha256")
    data: bytes = save(arrays, alignment=None, checksum=None)
    loaded = load(data)
    return {**loaded, **load_file(path, backend="pread")}


def inspect(path: str) -> List[int]:
    with safe_open(path, framework="np", device="cpu") as f:
        names: List[str] = f.keys()
        meta: Optional[Dict[str, str]] = f.metadata()
        for name in names + f.offset_keys():
            f.get_tensor(name)
        s = f.get_slice(names[0])
        dtype: str = s.get_dtype()
        part = s[0:1, ::2]
        assert dtype and part is not None and meta is None or meta is not None
        return s.get_shape()


def raw(arr: npt.NDArray[Any]) -> bytes:
    spec = TensorSpec(dtype="float32", shape=[arr.size], data_ptr=arr.ctypes.data, data_len=arr.nbytes)
    out = serialize({"x": spec}, metadata=None)
    serialize_file({"x": spec}, "out.safetensors")
    serialize_file({"x": spec}, "out.safetensors", alignment=4096, checksum="xxh3_128")
    for name, info in deserialize(out):
        print(name, info["shape"])
    try:
        safe_open("missing", "pt", backend="mmap")
    except (SafetensorError, FileNotFoundError):
        pass
    return out


def with_torch(path: str) -> None:
    import torch
    from safetensors.torch import load_file as torch_load_file, save_file as torch_save_file, save_model

    torch_save_file({"w": torch.zeros(2)}, path)
    tensors: Dict[str, torch.Tensor] = torch_load_file(path, device="cpu")
    save_model(torch.nn.Linear(2, 2), path)
    print(tensors)
