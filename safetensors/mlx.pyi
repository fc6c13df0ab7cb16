import os
from typing import Any, Dict, Optional, Union

import mlx.core as mx

__all__ = ["save", "save_file", "load", "load_file"]

def save(
    tensors: Dict[str, mx.array], metadata: Optional[Dict[str, str]] = None, *, alignment: Optional[int] = None,
    checksum: Optional[str] = None,
) -> bytes: ...
def save_file(
    tensors: Dict[str, mx.array], filename: Union[str, "os.PathLike[str]"], metadata: Optional[Dict[str, str]] = None,
    *, alignment: Optional[int] = None, checksum: Optional[str] = None, storage_options: Optional[Dict[str, Any]] = None,
) -> None: ...
def load(data: bytes) -> Dict[str, mx.array]: ...
def load_file(
    filename: Union[str, "os.PathLike[str]"], *, backend: Optional[str] = None, storage_options: Optional[Dict[str, Any]] = None,
    verify: bool = False,
) -> Dict[str, mx.array]: ...
