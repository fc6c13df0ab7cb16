"""PaddlePaddle helpers for safetensors: save and load ``dict[str, paddle.Tensor]``.

paddle is imported only inside the functions.  Saving hands each tensor's CPU
memory to the C writer (``TensorSpec`` with a data pointer).  The caller's dict
is never modified.

Loading: ``_from_numpy`` is the one NumPy -> paddle conversion, used by
``load``/``load_file`` here and by ``safe_open(framework="paddle")`` (the C
extension calls it).  It imports the buffer through DLPack, without a copy, at
any alignment; bfloat16 and float8 (which NumPy cannot export) go as bytes
re-typed on the paddle side with ``Tensor.view(dtype)``, still without a copy.
Slices with negative steps are copied once first (paddle's DLPack import
rejects negative strides).  ``_paddle_device`` is the one device mapping
(``"cuda:N"`` -> ``"gpu:N"``), applied by ``safe_open`` too.

``paddle.uint16`` (whose ``str`` is, confusingly, ``"paddle.bfloat16"``) is an
integer dtype distinct from ``paddle.bfloat16``: it is saved as U16 and U16
loads back as ``paddle.uint16``.
"""

import math
import os
import sys
from typing import Dict, Optional, Union

import numpy as np

from safetensors import TensorSpec, safe_open, serialize, serialize_file
from safetensors._safetensors_c import _dtype_table, _set_framework_converter
from safetensors import numpy as _st_numpy
from safetensors._common import DLPACK_DTYPES, little_endian

__all__ = ["save", "save_file", "load", "load_file"]

# numpy (ml_dtypes) dtype names imported as bytes and re-typed in paddle.
_RETYPED_DTYPES = frozenset(["bfloat16", "float8_e4m3fn", "float8_e5m2"])

# Bytes per element by dtype name, from the C core's one dtype table.
_SIZE_BY_NAME = {name: bits * pack // 8 for _, bits, name, _, pack in _dtype_table() if name}


def _dtype_name(dtype) -> str:
    """paddle dtype -> the writer's dtype name ("float32", "uint16", ...)."""
    import paddle

    if dtype == paddle.uint16:   # str(paddle.uint16) says "paddle.bfloat16"
        return "uint16"
    return str(dtype).split(".")[-1]


def _paddle_device(device):
    """A torch-style device ("cuda", "cuda:N", N) as paddle names it."""
    if device is None:
        return "cpu"
    if isinstance(device, int):
        return f"gpu:{device}"
    if device == "cuda":
        return "gpu:0"
    if isinstance(device, str) and device.startswith("cuda:"):
        return "gpu:" + device[len("cuda:"):]
    return device


def _import_dlpack(paddle, array: np.ndarray):
    """paddle.utils.dlpack.from_dlpack without its per-call Python checks (device,
    stream, version fallbacks: none apply to a NumPy array on the CPU); it
    halves the per-tensor cost, which matters for files of many small tensors.
    A paddle without ``paddle.base.core.from_dlpack`` gets the public call."""
    core_import = getattr(getattr(paddle.base, "core", None), "from_dlpack", None)
    if not callable(core_import):
        return paddle.utils.dlpack.from_dlpack(array)
    return paddle.Tensor(core_import(array.__dlpack__(max_version=(1, 2))))


def _from_numpy(array: np.ndarray):
    """One NumPy array -> paddle.Tensor on the CPU, sharing its memory."""
    import paddle

    name = array.dtype.name
    if array.size == 0 and name not in ("uint16", "uint32", "uint64"):
        # paddle sees DLPack empties as non-contiguous; paddle.empty makes
        # bfloat16 of uint16 and rejects uint32/uint64, which keep DLPack.
        return paddle.empty(list(array.shape), dtype=getattr(paddle, name))
    if name in DLPACK_DTYPES:
        if any(s < 0 for s in array.strides):
            array = np.ascontiguousarray(array)
        return _import_dlpack(paddle, array)
    if name not in _RETYPED_DTYPES:
        raise TypeError(f"paddle has no dtype for {name} tensors")
    dtype = getattr(paddle, name)
    shape = list(array.shape)
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return _import_dlpack(paddle, raw).view(dtype).reshape(shape)


# _paddle_device through a lambda: looked up at each call, so the module's one mapping.
_set_framework_converter("paddle", _from_numpy, lambda device: _paddle_device(device))


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
        # (paddle calls some empty tensors non-contiguous: they have no layout)
        if is_contig is not None and v.size != 0 and not is_contig():
            raise ValueError(
                f"You are trying to save a non contiguous tensor: `{k}` which is not allowed. It either means you"
                " are trying to save tensors which are reference of each other in which case it's recommended to"
                " save only the full tensors, and reslice at load time, or simply call `.contiguous()` on your"
                " tensor to pack it before saving."
            )
        t = v if v.place.is_cpu_place() else v.cpu()
        name = _dtype_name(t.dtype)
        shape = [int(d) for d in t.shape]
        if sys.byteorder == "little":
            ptr = t.data_ptr()
            nbytes = math.prod(shape) * (t.element_size() if hasattr(t, "element_size") else _SIZE_BY_NAME[name])
        else:  # big-endian hosts: the bytes swapped by NumPy
            t = little_endian(t.numpy())
            ptr, nbytes = t.ctypes.data, t.nbytes
        keepalive.append(t)
        specs[k] = TensorSpec(dtype=name, shape=shape, data_ptr=ptr if nbytes else 0, data_len=nbytes)
    return specs, keepalive


def save(tensors, metadata: Optional[Dict[str, str]] = None, *, alignment: Optional[int] = None,
         checksum: Optional[str] = None) -> bytes:
    """Serialize ``tensors`` (paddle tensors) to the bytes of a safetensors file.

    Each tensor's CPU memory is handed to the C writer directly (tensors on a
    GPU are copied to the CPU first).  The caller's dict is never modified.
    ``paddle.uint16`` (whose ``str`` reads "paddle.bfloat16") is saved as U16;
    ``paddle.bfloat16`` as BF16.

    Args:
        tensors (dict[str, paddle.Tensor]): contiguous tensors, on any device.
        metadata (dict[str, str] | None): the header's ``__metadata__``.
        alignment (int | None): None (default): upstream's layout; else a power
            of two from 8 to 4096 the data section starts at a multiple of
            (docs/integrity.md).
        checksum (str | None): None (default), "sha256" or "xxh3_128": the
            digests of every tensor and of the data section, recorded in
            ``__metadata__`` (docs/integrity.md).

    Returns:
        bytes: the file, upstream 0.8.0's exact layout (by default).

    Raises:
        ValueError: ``tensors`` is not a dict, a value is not a
            ``paddle.Tensor``, or a tensor is not contiguous; a bad alignment
            or checksum.
        SafetensorError: an unsupported dtype ("Unknown dtype ...").
        ImportError: ``paddle`` is not installed.

    Example:
        >>> import paddle
        >>> from safetensors.paddle import save
        >>> data = save({"w": paddle.zeros([2, 3])}, metadata={"format": "paddle"})
    """
    specs, keepalive = _flatten(tensors)  # keepalive: the memory specs point into, until written
    return serialize(specs, metadata=metadata, alignment=alignment, checksum=checksum)


def save_file(tensors, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None, *,
              alignment: Optional[int] = None, checksum: Optional[str] = None,
              storage_options: Optional[dict] = None) -> None:
    """Write ``tensors`` (paddle tensors) to ``filename`` atomically (temporary file + rename).

    Args:
        tensors (dict[str, paddle.Tensor]): as for ``save``.
        filename (str | os.PathLike): the destination (only a regular file or
            nothing there is replaced), or a URL uploaded part by part
            (docs/remote.md).
        metadata (dict[str, str] | None): the header's ``__metadata__``.
        alignment, checksum: as for ``save``.
        storage_options (dict | None): options of the remote filesystem (URLs only).

    Returns:
        None

    Raises:
        ValueError, SafetensorError, ImportError: as for ``save``;
            ``SafetensorIOError`` (an ``OSError``) for I/O errors, naming the path.

    Example:
        >>> import paddle
        >>> from safetensors.paddle import save_file
        >>> save_file({"w": paddle.zeros([2, 3])}, "model.safetensors")
    """
    specs, keepalive = _flatten(tensors)  # keepalive: the memory specs point into, until written
    serialize_file(specs, filename, metadata=metadata, alignment=alignment, checksum=checksum,
                   storage_options=storage_options)


def load(data: bytes, device: str = "cpu"):
    """Load paddle tensors from the bytes of a safetensors file onto ``device``.

    One copy each (paddle tensors are writable, ``data`` is not), then moved
    to ``device`` if that is not the CPU.

    Args:
        data (bytes): the file's content.
        device (str | int): "cpu" (default), "gpu:N" (paddle's spelling), or
            torch's "cuda", "cuda:N" or ``N``, which mean "gpu:N".

    Returns:
        dict[str, paddle.Tensor]: in file (offset) order.

    Raises:
        SafetensorError: "Error while deserializing: ...".
        TypeError: a dtype paddle does not have (F8_E8M0, the FNUZ float8s, F4/F6).
        ImportError: ``paddle`` is not installed.

    Example:
        >>> import paddle
        >>> from safetensors.paddle import load, save
        >>> tensors = load(save({"w": paddle.zeros([2, 3])}), device="cpu")
    """
    tensors = {k: _from_numpy(v.copy()) for k, v in _st_numpy.load(data).items()}
    place = _paddle_device(device)
    if place != "cpu":
        tensors = {k: v.to(place) for k, v in tensors.items()}
    return tensors


def load_file(filename: Union[str, os.PathLike], device="cpu", *, backend: Optional[str] = None,
              storage_options: Optional[dict] = None, verify: bool = False):
    """Load every tensor of ``filename`` as paddle tensors on ``device``.

    The same as ``safe_open(filename, framework="paddle", device=device).get_tensors()``.
    On the CPU every tensor is zero-copy at any alignment (DLPack import;
    bfloat16 and float8 as bytes re-typed by ``Tensor.view``); writing to one
    changes the file's private mapping, never the file.  Slices with negative
    steps are copied once.

    Args:
        filename (str | os.PathLike): the file, or a URL (docs/remote.md).
        device (str | int): "cpu" (default), "gpu:N" (paddle's spelling), or
            torch's "cuda", "cuda:N" or ``N``, which mean "gpu:N".
        backend (str | None): "mmap" (the file's private mapping) or
            "pread" (the bytes read once into a fresh buffer, which the
            tensors then share). None (default): "pread" on network and FUSE
            file systems, else "mmap".
        storage_options (dict | None): options for the remote filesystem
            (URLs only).
        verify (bool): check every tensor against the digest the file
            records (docs/integrity.md); a file without digests and a
            tensor that fails raise SafetensorError.

    Returns:
        dict[str, paddle.Tensor]: in file (offset) order.

    Raises:
        FileNotFoundError: the file does not exist (and other ``OSError``s).
        SafetensorError: an invalid file.
        TypeError: a dtype paddle does not have (F8_E8M0, the FNUZ float8s, F4/F6).
        ImportError: ``paddle`` is not installed.

    Example:
        >>> from safetensors.paddle import load_file
        >>> tensors = load_file("model.safetensors", device="gpu:0")
    """
    if isinstance(device, str) and device.split(":")[0] == "gpu":
        device = "cuda" + device[len("gpu"):]   # safe_open takes torch's spelling
    with safe_open(filename, framework="paddle", device=device, backend=backend, storage_options=storage_options,
                   verify=verify) as f:
        return f.get_tensors()
