"""What the framework modules written on top of ``safetensors.numpy`` share
(flax, tensorflow, mlx; numpy and stream for ``little_endian``): their
tensors become NumPy arrays for saving, and their four functions have one
docstring each, filled in per framework by ``docstrings``."""
import sys

import numpy as np

from safetensors._safetensors_c import _dtype_table

# The stock NumPy dtypes of the core's table (ml_dtypes' are not): the ones NumPy
# exports through DLPack, and paddle and TensorFlow import as the same dtype.
DLPACK_DTYPES = frozenset(name for _, _, name, source, _ in _dtype_table() if source == "numpy")


def numpy_dict(tensors, kind: str, convert=np.asarray):
    """{name: convert(tensor)} of a dict of a framework's tensors (``kind``
    names their type in the TypeError raised for anything but a dict)."""
    if not isinstance(tensors, dict):
        raise TypeError(f"Expected a dict of [str, {kind}] but received {type(tensors)}")
    return {k: convert(v) for k, v in tensors.items()}


def aligned_copy(array: np.ndarray, alignment: int) -> np.ndarray:
    """``array`` copied (one memcpy, or a gather for strided views) into a
    fresh C-contiguous buffer whose address is a multiple of ``alignment``."""
    buffer = np.empty(array.nbytes + alignment, np.uint8)
    start = -buffer.ctypes.data % alignment
    out = buffer[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    np.copyto(out, array)
    return out


def little_endian(array: np.ndarray) -> np.ndarray:
    """``array`` in little-endian byte order and C order (itself if it is already)."""
    order = array.dtype.byteorder
    if order == ">" or (order == "=" and sys.byteorder == "big"):
        return array.astype(array.dtype.newbyteorder("<"), order="C")  # a C-ordered copy
    return array if array.flags.c_contiguous else array.copy(order="C")


_SAVE = """Serialize ``tensors`` ({plural}) to the bytes of a safetensors file.

Each tensor is converted to NumPy first and written by the NumPy writer
(little-endian, C order).  The caller's dict is never modified.

Args:
    tensors (dict[str, {kind}]): the tensors to write; anything
        ``numpy.asarray`` accepts is taken too.
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
    TypeError: ``tensors`` is not a dict.
    ValueError: a bad alignment or checksum.
    SafetensorError: an unsupported dtype ("Unknown dtype ...").

Example:
    >>> {setup}
    >>> from safetensors.{module} import save
    >>> data = save({{"w": {zeros}}}, metadata={{"format": "{module}"}})
"""

_SAVE_FILE = """Write ``tensors`` ({plural}) to ``filename`` atomically (temporary file + rename).

Args:
    tensors (dict[str, {kind}]): as for ``save``.
    filename (str | os.PathLike): the destination (only a regular file or
        nothing there is replaced), or a URL uploaded part by part
        (docs/remote.md).
    metadata (dict[str, str] | None): the header's ``__metadata__``.
    alignment, checksum: as for ``save``.
    storage_options (dict | None): options of the remote filesystem (URLs only).

Returns:
    None

Raises:
    TypeError, ValueError, SafetensorError: as for ``save``; ``SafetensorIOError`` (an
        ``OSError``) for I/O errors, naming the path.

Example:
    >>> {setup}
    >>> from safetensors.{module} import save_file
    >>> save_file({{"w": {zeros}}}, "model.safetensors")
"""

_LOAD = """Load {plural} from the bytes of a safetensors file.

{load_notes}

Args:
    data (bytes): the file's content.

Returns:
    dict[str, {kind}]: in file (offset) order.

Raises:
    SafetensorError: "Error while deserializing: ...".
{raises}    ImportError: ``{package}`` is not installed.

Example:
    >>> {setup}
    >>> from safetensors.{module} import load, save
    >>> tensors = load(save({{"w": {zeros}}}))
"""

_LOAD_FILE = """Load every tensor of ``filename`` as {plural} (file order).

The same as ``safe_open(filename, framework="{framework}").get_tensors()``.
{load_file_notes}

Args:
    filename (str | os.PathLike): the file, or a URL (docs/remote.md).
    backend (str | None): "mmap" (the file's private mapping) or "pread"
        (the bytes read once into a fresh buffer; the same copy rules then
        apply to that buffer). None (default): "pread" on network and FUSE
        file systems, else "mmap" (docs/design.md, "Choosing how a file is
        read").
    storage_options (dict | None): options of the remote filesystem (URLs only).
    verify (bool): check every tensor against the digest the file records
        (docs/integrity.md); a file without digests, and a tensor
        that fails, raise SafetensorError.

Returns:
    dict[str, {kind}]: in file (offset) order; writes to them never
    reach the file.

Raises:
    FileNotFoundError: the file does not exist (and other ``OSError``s).
    SafetensorError: an invalid file.
{raises}    ImportError: ``{package}`` is not installed.

Example:
    >>> from safetensors.{module} import load_file
    >>> tensors = load_file("model.safetensors")
"""


def docstrings(**fields: str):
    """The docstrings of save, save_file, load and load_file of a framework
    module, from ``fields``: module ("flax"), framework (safe_open's name
    for it), package (what ``import`` needs), kind ("jax.Array"), plural
    ("jax arrays"), setup and zeros (an example's import and a tensor),
    load_notes and load_file_notes (copies and dtypes), raises (more
    "Raises:" lines, indented, or "")."""
    return tuple(template.format(**fields) for template in (_SAVE, _SAVE_FILE, _LOAD, _LOAD_FILE))
