import os
from typing import Any, Dict, Optional, Union

import numpy as np
import numpy.typing as npt

__all__ = ["save", "save_file", "load", "load_file"]

def save(
    tensor_dict: Dict[str, npt.NDArray[Any]],
    metadata: Optional[Dict[str, str]] = None,
    *,
    alignment: Optional[int] = None,
    checksum: Optional[str] = None,
) -> bytes: ...
def save_file(
    tensor_dict: Dict[str, npt.NDArray[Any]],
    filename: Union[str, "os.PathLike[str]"],
    metadata: Optional[Dict[str, str]] = None,
    *,
    alignment: Optional[int] = None,
    checksum: Optional[str] = None,
    storage_options: Optional[Dict[str, Any]] = None,
) -> None: ...
def load(data: bytes) -> Dict[str, npt.NDArray[Any]]: ...
def load_file(
    filename: Union[str, "os.PathLike[str]"], *, backend: Optional[str] = None, storage_options: Optional[Dict[str, Any]] = None,
    verify: bool = False,
) -> Dict[str, npt.NDArray[Any]]: ...
