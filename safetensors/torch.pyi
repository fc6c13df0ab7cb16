import os
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch

from ._safetensors_c import safe_open as safe_open

__all__ = ["save", "save_file", "load", "load_file", "save_model", "load_model", "storage_ptr", "storage_size",
           "safe_open"]

_PathLike = Union[str, "os.PathLike[str]"]

def storage_ptr(tensor: torch.Tensor) -> int: ...
def storage_size(tensor: torch.Tensor) -> int: ...
def save(
    tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None, *, alignment: Optional[int] = None,
    checksum: Optional[str] = None,
) -> bytes: ...
def save_file(
    tensors: Dict[str, torch.Tensor], filename: _PathLike, metadata: Optional[Dict[str, str]] = None,
    *, alignment: Optional[int] = None, checksum: Optional[str] = None, storage_options: Optional[Dict[str, Any]] = None,
) -> None: ...
def save_model(
    model: torch.nn.Module,
    filename: _PathLike,
    metadata: Optional[Dict[str, str]] = None,
    force_contiguous: bool = True,
    *, alignment: Optional[int] = None, checksum: Optional[str] = None,
) -> None: ...
def load(data: bytes) -> Dict[str, torch.Tensor]: ...
def load_file(
    filename: _PathLike,
    device: Union[str, int] = "cpu",
    *,
    backend: Optional[str] = None,
    storage_options: Optional[Dict[str, Any]] = None,
    verify: bool = False,
) -> Dict[str, torch.Tensor]: ...
def load_model(
    model: torch.nn.Module,
    filename: _PathLike,
    strict: bool = True,
    device: Union[str, int] = "cpu",
    *,
    backend: Optional[str] = None,
) -> Tuple[Set[str], List[str]]: ...
