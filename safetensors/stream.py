"""Writing a safetensors file tensor by tensor (the streaming writer).

Declare every tensor (name, dtype, shape) and the metadata up front, then
write each tensor when it is ready, in any order, from any thread. Only the
tensor being written needs to be in memory, and the file is byte-identical
to ``save_file`` of the same tensors (same header, same order, same
padding). Like ``save_file`` it is atomic: data goes to a temporary file in
the destination's directory, which is renamed over the destination only
when every declared tensor has been written::

    from safetensors.stream import StreamWriter

    specs = {"embed": ("BF16", (32000, 4096)), "head": torch.empty(10, 4, device="meta")}
    with StreamWriter("model.safetensors", specs, metadata={"format": "pt"}) as writer:
        for name in specs:
            writer.write(name, produce(name))      # torch tensor or NumPy array

An exception inside the ``with`` block, a tensor never written, or a writer
dropped without ``commit()`` leaves nothing at the destination. An exception
inside the block is never replaced by the writer's own complaints (writes
still running on other threads): they are added to it as a note. Writing a
tensor twice, or data whose dtype, shape or size differs from the
declaration, raises ``SafetensorError``. See docs/streaming.md.

``alignment`` and ``checksum`` are those of ``save_file`` (docs/integrity.md),
and give the same file: with a checksum, the header is written at once with
placeholders of the digests' fixed length, each tensor is hashed as it is
written (and the data section while tensors come in file order; the rest is
read back from the file at commit), and commit rewrites the header in place
with the real digests before the file moves into place.
"""
import os
import sys
import threading
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

from . import checksums
from ._safetensors_c import SafetensorError, _dtype_table
from ._safetensors_c import StreamWriter as _CStreamWriter

__all__ = ["StreamWriter", "header_dtype"]

# The core's dtype table: header names ("F32") and type names ("float32") -> header name.
_HEADER_NAME = {name: code for code, _, type_name, _, _ in _dtype_table() for name in (code, type_name) if name}


def header_dtype(dtype: Any) -> str:
    """The header dtype name ("F32", "BF16", ...) of a header name, a torch
    dtype, a NumPy dtype or scalar type, or a type name such as "float32"
    (resolved by the C core's dtype table)."""
    name: Any
    if isinstance(dtype, str):
        name = dtype
    elif type(dtype).__module__ == "torch":  # torch.dtype: "torch.float32"
        name = str(dtype).rpartition(".")[2]
    else:
        name = getattr(dtype, "name", None)
        if not isinstance(name, str) and isinstance(dtype, type):
            import numpy as np

            name = np.dtype(dtype).name
    if not isinstance(name, str) or name not in _HEADER_NAME:
        raise ValueError(f"unsupported dtype {dtype!r}")
    return _HEADER_NAME[name]


def _is_torch_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_shape(tensor) -> Tuple[int, ...]:
    shape = tuple(tensor.shape)
    if shape and str(tensor.dtype) == "torch.float4_e2m1fn_x2":
        shape = shape[:-1] + (shape[-1] * 2,)  # two F4 values per stored element
    return shape


def _declaration(name: str, spec: Any) -> Tuple[str, str, Tuple[int, ...]]:
    """(name, header dtype, logical shape) from a tensor, an array, an object
    with .dtype/.shape (a meta tensor, jax.ShapeDtypeStruct, ...) or a
    (dtype, shape) pair."""
    if not isinstance(name, str):
        raise TypeError(f"tensor names must be str, not {type(name).__name__}")
    if _is_torch_tensor(spec):
        return name, header_dtype(spec.dtype), _torch_shape(spec)
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        dtype, shape = spec
    elif hasattr(spec, "dtype") and hasattr(spec, "shape"):
        dtype, shape = spec.dtype, spec.shape
    else:
        raise TypeError(f"tensor `{name}`: expected a tensor, an array or a (dtype, shape) pair, not {spec!r}")
    return name, header_dtype(dtype), tuple(int(d) for d in shape)


def _file_bytes(value):
    """A buffer with the little-endian C-order bytes of a torch tensor or a
    NumPy array (one copy at most: from another device, of a non-contiguous
    or big-endian value)."""
    if not _is_torch_tensor(value):
        import numpy as np

        from ._common import little_endian

        return little_endian(value).reshape(-1).view(np.uint8)
    from ._torch_types import to_ndarray

    if value.layout != sys.modules["torch"].strided:
        raise SafetensorError("sparse tensors cannot be written: use .to_dense() first")
    return to_ndarray(value)[0]  # a view that keeps its CPU tensor alive


class StreamWriter:
    """A safetensors file written tensor by tensor; see the module docstring.

    ``tensors`` maps each name to its declaration: a tensor or array (only
    its dtype and shape are used: a ``device="meta"`` tensor is enough), an
    object with ``dtype`` and ``shape``, or a ``(dtype, shape)`` pair where
    dtype is a header name ("F32"), a torch or NumPy dtype. ``alignment``
    (None or a power of two from 8 to 4096) and ``checksum`` (None, "sha256"
    or "xxh3_128") are those of ``save_file``.
    """

    def __init__(
        self,
        filename: Union[str, os.PathLike],
        tensors: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]],
        metadata: Optional[Dict[str, str]] = None,
        *,
        alignment: Optional[int] = None,
        checksum: Optional[str] = None,
    ):
        items = tensors.items() if isinstance(tensors, Mapping) else tensors
        declarations = [_declaration(name, spec) for name, spec in items]  # a name twice: the core's error
        self._declared = {decl[0]: decl for decl in declarations}
        self.filename = os.fspath(filename)
        self._checksum = checksum
        if checksum is not None:  # placeholders: a header of the final length (JSON order does not change it)
            zeros = "0" * len(checksums.new_hasher(checksum).hexdigest())
            self._metadata = metadata
            metadata = checksums.with_digests(metadata, checksum, list(self._declared), [zeros] * len(declarations),
                                              zeros)
        self._writer = _CStreamWriter(self.filename, declarations, metadata, alignment=alignment)
        if checksum is not None:
            names = list(self._declared)
            self._order = [names[index] for index, _, _ in self._writer._layout()]  # file order
            self._position = {name: i for i, name in enumerate(self._order)}
            self._digests: Dict[str, str] = {}
            self._data = checksums.new_hasher(checksum)  # the data section, while tensors come in file order
            self._data_upto = 0  # position of the next tensor it needs
            self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """True after ``commit()`` or ``abort()``."""
        return self._writer.closed

    @property
    def names(self):
        """The declared tensor names, in declaration order."""
        return list(self._declared)

    def write(self, name: str, tensor: Any) -> None:
        """Writes one declared tensor: a torch tensor (any device), a NumPy
        array, anything ``numpy.asarray`` accepts, or raw little-endian bytes
        (bytes, bytearray, memoryview) of exactly the declared size."""
        declared = self._declared.get(name)
        if declared is None:
            raise SafetensorError(f"tensor `{name}` was not declared when the writer was opened")
        if isinstance(tensor, (bytes, bytearray, memoryview)):
            data = tensor
        else:
            if not _is_torch_tensor(tensor):
                import numpy as np

                tensor = np.asarray(tensor)
            _, dtype, shape = _declaration(name, tensor)
            if (dtype, shape) != declared[1:]:
                raise SafetensorError(
                    f"tensor `{name}` was declared as {declared[1]} {list(declared[2])} "
                    f"but the value written is {dtype} {list(shape)}"
                )
            data = _file_bytes(tensor)
        self._writer.write(name, data)
        if self._checksum is not None:
            self._hash(name, data)

    def _hash(self, name: str, data: Any) -> None:
        """Records the digest of a tensor just written (its bytes as in the file), and feeds the
        data section's hasher when it is the next tensor in file order. Only one thread can hold
        that tensor, so the hasher is never fed by two at once; the digest is recorded last, so
        commit sees every digest only once all feeding is done."""
        digest = checksums.new_hasher(self._checksum)
        digest.update(data)
        if self._position[name] == self._data_upto:
            self._data.update(data)
        with self._lock:
            if self._position[name] == self._data_upto:
                self._data_upto += 1
            self._digests[name] = digest.hexdigest()

    def _finish_digests(self) -> None:
        """Hashes what the data section's hasher has not seen (tensors written out of file order,
        read back from the file) and rewrites the header with the real digests."""
        layout = self._writer._layout()
        chunk = memoryview(bytearray(min(16 << 20, max((size for _, _, size in layout), default=1) or 1)))
        for _, offset, size in layout[self._data_upto:]:
            for lo in range(0, size, len(chunk)):
                piece = chunk[:min(len(chunk), size - lo)]
                self._writer._readinto(offset + lo, piece)
                self._data.update(piece)
        self._writer._rewrite_metadata(checksums.with_digests(
            self._metadata, self._checksum, self._order, [self._digests[n] for n in self._order],
            self._data.hexdigest()))

    def commit(self) -> None:
        """Checks that every declared tensor was written and moves the file
        into place (with a checksum, after writing the digests into the
        header). If it fails, nothing is left at the destination."""
        if self._checksum is not None and not self.closed and len(self._digests) == len(self._declared):
            try:
                self._finish_digests()
            except BaseException:
                self.abort()
                raise
        self._writer.commit()

    def abort(self) -> None:
        """Discards everything written; the destination is left as it was.
        While writes are still running on other threads the writer is closed
        all the same and raises SafetensorError: the temporary file goes when
        the last of them ends."""
        self._writer.abort()

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            if not self.closed:
                self.commit()
            return
        try:
            self.abort()
        except SafetensorError as complaint:  # writes in flight: the exception of the block wins
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"{self!r}: {complaint}")

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<safetensors.stream.StreamWriter {self.filename!r}, {len(self._declared)} tensors, {state}>"
