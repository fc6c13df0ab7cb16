import os
from typing import Any, Dict, Optional, Union

import jax

__all__ = ["save", "save_file", "load", "load_file"]

def save(
    tensors: Dict[str, jax.Array], metadata: Optional[Dict[str, str]] = None, *, alignment: Optional[int] = None,
    checksum: Optional[str] = None,
) -> bytes: ...
def save_file(
    tensors: Dict[str, jax.Array], filename: Union[str, "os.PathLike[str]"], metadata: Optional[Dict[str, str]] = None,
    *, alignment: Optional[int] = None, checksum: Optional[str] = None, storage_options: Optional[Dict[str, Any]] = None,
) -> None: ...
def load(data: bytes) -> Dict[str, jax.Array]: ...
def load_file(
    filename: Union[str, "os.PathLike[str]"], *, backend: Optional[str] = None, storage_options: Optional[Dict[str, Any]] = None,
    verify: bool = False,
) -> Dict[str, jax.Array]: ...
