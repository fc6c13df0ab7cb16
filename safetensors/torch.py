"""PyTorch helpers for safetensors: save and load ``dict[str, torch.Tensor]``.

Saving hands the tensors' own CPU memory to the C writer (``TensorSpec`` with a
data pointer): no numpy, no staging copy of contiguous CPU tensors.  Loading
goes through ``safe_open`` (zero-copy views of the file mapping on CPU) or,
for ``load(bytes)``, through ``deserialize``.
"""

import os
import sys
from collections import defaultdict
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch

from safetensors import TensorSpec, _safetensors_c, deserialize, safe_open, serialize, serialize_file
from safetensors._torch_types import SIZE, TYPES, byteswapped, cpu_ready, storage_shape, to_ndarray

__all__ = ["save", "save_file", "load", "load_file", "save_model", "load_model", "storage_ptr", "storage_size",
           "safe_open"]

_LITTLE = sys.byteorder == "little"
# Upstream's names for the core's dtype table (unlike upstream 0.8.0, with F8_E8M0 and F4).
_TYPES: Dict[str, torch.dtype] = TYPES
_SIZE: Dict[torch.dtype, int] = SIZE
_cpu_ready, _to_ndarray = cpu_ready, to_ndarray   # the names callers know (stream.py, tests)


def _getdtype(dtype_str: str) -> torch.dtype:
    """Header dtype code (``"F32"``) -> torch dtype; KeyError when unknown."""
    return _TYPES[dtype_str]


def _dtype_name(dtype: torch.dtype) -> str:
    # "torch.float32" -> "float32": the TensorSpec dtype vocabulary.
    return _DTYPE_NAMES.get(dtype) or str(dtype).split(".")[-1]


# A dict lookup per tensor saved: functools.lru_cache cost 70 us more per 1,000 tensors.
_DTYPE_NAMES: Dict[torch.dtype, str] = {dt: str(dt).split(".")[-1] for dt in SIZE}


def storage_ptr(tensor: torch.Tensor) -> int:
    """Address of the start of the tensor's storage (0 when it has none).

    Args:
        tensor (torch.Tensor): any tensor.

    Returns:
        int: the storage's data pointer (views of one storage share it).

    Example:
        >>> t = torch.zeros(4)
        >>> storage_ptr(t[2:]) == storage_ptr(t)
        True
    """
    try:
        return tensor.untyped_storage().data_ptr()
    except NotImplementedError:  # no storage (sparse layouts)
        return 0


def storage_size(tensor: torch.Tensor) -> int:
    """Size in bytes of the tensor's whole storage.

    Args:
        tensor (torch.Tensor): any tensor.

    Returns:
        int: bytes of the storage (not of the view).

    Example:
        >>> storage_size(torch.zeros(4)[:1])
        16
    """
    try:
        return tensor.untyped_storage().nbytes()
    except NotImplementedError:  # no storage (sparse layouts)
        return tensor.nelement() * _SIZE[tensor.dtype]


def _end_ptr(tensor: torch.Tensor) -> int:
    """One past the last byte the tensor can address (``data_ptr()`` if empty).

    Computed from the strides, so it also works for tensors that cannot be
    flattened with ``view(-1)`` (transposed or otherwise strided views).
    """
    if not tensor.nelement():
        return tensor.data_ptr()
    last = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    return tensor.data_ptr() + (last + 1) * tensor.element_size()


def _filter_shared_not_shared(tensors: List[Set[str]], state_dict: Dict[str, torch.Tensor]) -> List[Set[str]]:
    """Split groups of names that share a storage into clusters of names whose
    byte ranges really overlap (disjoint views of one storage are fine)."""
    filtered = []
    for shared in tensors:
        last_stop = -1
        for start, stop, name in sorted((state_dict[n].data_ptr(), _end_ptr(state_dict[n]), n) for n in shared):
            if start >= last_stop:
                filtered.append({name})
            else:
                filtered[-1].add(name)
            last_stop = max(last_stop, stop)
    return filtered


def _find_shared_tensors(state_dict: Dict[str, torch.Tensor]) -> List[Set[str]]:
    """Groups of names (singletons included) whose memory overlaps."""
    groups = defaultdict(set)
    for k, v in state_dict.items():
        if v.is_meta:
            continue
        ptr, size = storage_ptr(v), storage_size(v)
        if ptr != 0 and size != 0:
            groups[(v.device, ptr, size)].add(k)
    return _filter_shared_not_shared(list(groups.values()), state_dict)


def _is_complete(tensor: torch.Tensor) -> bool:
    """True when the tensor covers its whole storage, starting at its start."""
    nbytes = tensor.nelement() * _SIZE[tensor.dtype]
    return tensor.data_ptr() == storage_ptr(tensor) and nbytes == storage_size(tensor)


def _remove_duplicate_names(state_dict: Dict[str, torch.Tensor], *, preferred_names: Optional[List[str]] = None,
                            discard_names: Optional[List[str]] = None) -> Dict[str, List[str]]:
    """For each cluster of overlapping tensors pick one name to keep
    (complete, then not discarded, then preferred; smallest name wins) and
    list the others (sorted) under it."""
    preferred = set(preferred_names or ())
    discard = set(discard_names or ())
    to_remove = defaultdict(list)
    for shared in _find_shared_tensors(state_dict):
        complete_names = {name for name in shared if _is_complete(state_dict[name])}
        if not complete_names:
            raise RuntimeError(
                "Error while trying to find names to remove to save state dict, but found no suitable name to keep"
                f" for saving amongst: {shared}. None is covering the entire storage.Refusing to save/load the model"
                " since you could be storing much more memory than needed. Please refer to"
                " https://huggingface.co/docs/safetensors/torch_shared_tensors for more information. Or open an"
                " issue."
            )
        # The first complete name that is preferred, else not discarded, else any.
        keep_name = min(preferred & complete_names or complete_names - discard or complete_names)
        for name in sorted(shared):
            if name != keep_name:
                to_remove[keep_name].append(name)
    return to_remove


# From this many tensors on, a sweep over their byte ranges comes before
# ``_find_shared_tensors`` (a storage object per tensor): when no two ranges
# intersect, no group of shared tensors can exist.
_SWEEP_MIN = 64


def _ranges_overlap(starts: List[int], ends: List[int]) -> bool:
    """Whether a byte range [start, end) starts inside another (sorted by
    start: a range starts inside an earlier one only if it starts inside the
    one just before it; a tie may report an overlap, which is only checked)."""
    import numpy as np

    starts, ends = np.array(starts, np.uint64), np.array(ends, np.uint64)
    order = np.argsort(starts)
    return bool(np.any(starts[order][1:] < ends[order][:-1]))

# Upstream's messages (``_tobytes`` names one tensor, saving a list of them).
_SPARSE = (
    "You are trying to save a sparse {}: `{}` which this library does not support. You can make it a dense tensor"
    " before saving with `.to_dense()` but be aware this might make a much larger file than needed."
)
_NON_CONTIGUOUS = (
    "You are trying to save a non contiguous tensor: `{}` which is not allowed. It either means you are trying to"
    " save tensors which are reference of each other in which case it's recommended to save only the full"
    " tensors, and reslice at load time, or simply call `.contiguous()` on your tensor to pack it before saving."
)


def _shape_of(v: torch.Tensor):
    ndim = v.dim()  # building a torch.Size costs more than the rest of a spec
    return (v.size(0),) if ndim == 1 else (() if ndim == 0 else v.shape)


def _scan_for_save(tensors: Dict[str, torch.Tensor], keep_alive_buffer: List) -> Dict[str, Optional[TensorSpec]]:
    """Validate a dict before saving, in upstream's order: dict, tensor values,
    sparse layouts, shared memory, contiguity; raises on the first problem.
    One pass also makes the ``TensorSpec`` of each tensor already in CPU
    little-endian memory: ``{name: spec}`` in the dict's order, None for the
    tensors still to be copied (devices, conjugate or negative bits, big-endian
    hosts)."""
    if not isinstance(tensors, dict):
        raise ValueError(f"Expected a dict of [str, torch.Tensor] but received {type(tensors)}")

    invalid = []
    ptrs, ends = [], []
    non_contiguous = None
    specs: Dict[str, Optional[TensorSpec]] = {}
    make = TensorSpec._of
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"Key `{k}` is invalid, expected torch.Tensor but received {type(v)}")
        if v.layout is not torch.strided:
            invalid.append(k)
            continue
        if invalid:
            continue  # about to raise: no need to read further
        contiguous = v.is_contiguous()
        if not contiguous and non_contiguous is None:
            non_contiguous = k
        if v.is_meta:
            ptrs.append(0)
            ends.append(0)
            specs[k] = None
            continue
        ptr, nbytes = v.data_ptr(), v.nbytes
        ptrs.append(ptr)
        ends.append(ptr + nbytes if contiguous else _end_ptr(v))
        spec = None   # one store per tensor: a second costs 30 us per 1,000 tensors
        if contiguous and v.is_cpu and _LITTLE and not v.is_conj() and not v.is_neg():
            try:
                spec = make(_DTYPE_NAMES.get(v.dtype) or _dtype_name(v.dtype), _shape_of(v), ptr if nbytes else 0,
                            nbytes)
                keep_alive_buffer.append(v)
            except Exception:  # raised again, in order, by the caller
                spec = None
        specs[k] = spec
    if invalid:
        raise ValueError(_SPARSE.format("tensors", invalid))

    if len(ptrs) < _SWEEP_MIN or _ranges_overlap(ptrs, ends):
        failing = [names for names in _find_shared_tensors(tensors) if len(names) > 1]
        if failing:
            raise RuntimeError(
                f"""
            Some tensors share memory, this will lead to duplicate memory on disk and potential differences when loading them again: {failing}.
            A potential way to correctly save your model is to use `save_model`.
            More information at https://huggingface.co/docs/safetensors/torch_shared_tensors
            """
            )

    if non_contiguous is not None:
        raise ValueError(_NON_CONTIGUOUS.format(non_contiguous))
    return specs


def _evaluate_tensors_for_save(tensors: Dict[str, torch.Tensor]) -> None:
    """Validate a dict before saving (see ``_scan_for_save``)."""
    _scan_for_save(tensors, [])


def _flatten_as_ptr(tensors: Dict[str, torch.Tensor], keep_alive_buffer: List) -> Dict[str, TensorSpec]:
    """Validate ``tensors`` and describe each one as a ``TensorSpec`` pointing
    at CPU memory.  The CPU tensors the pointers refer to are appended to
    ``keep_alive_buffer``, which the caller keeps alive until the write is done."""
    specs = _scan_for_save(tensors, keep_alive_buffer)
    for k, spec in specs.items():
        if spec is None:  # in dict order, so the first bad tensor raises first
            t = cpu_ready(tensors[k])
            keep_alive_buffer.append(t)
            nbytes = t.nelement() * t.element_size()
            specs[k] = TensorSpec._of(_dtype_name(t.dtype), list(t.shape), t.data_ptr() if nbytes else 0, nbytes)
    return specs  # type: ignore[return-value]  # no None left


def save(tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None, *,
         alignment: Optional[int] = None, checksum: Optional[str] = None) -> bytes:
    """Serialize ``tensors`` to the bytes of a safetensors file.

    Args:
        tensors (dict[str, torch.Tensor]): dense tensors on any device; tensors that
            share memory must not overlap (use ``save_model`` for tied weights).
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
        ValueError: sparse, non-contiguous or memory-sharing tensors (upstream's
            messages); a bad alignment or checksum.
        SafetensorError: "Error while serializing: ...".

    Example:
        >>> from safetensors.torch import save
        >>> data = save({"w": torch.zeros(2, 3)}, metadata={"format": "pt"})
    """
    keepalive: List = []  # the tensors the specs point into, alive until the write returns
    return serialize(_flatten_as_ptr(tensors, keepalive), metadata=metadata, alignment=alignment, checksum=checksum)


def save_file(tensors: Dict[str, torch.Tensor], filename: Union[str, os.PathLike],
              metadata: Optional[Dict[str, str]] = None, *, alignment: Optional[int] = None,
              checksum: Optional[str] = None, storage_options: Optional[Dict[str, Any]] = None) -> None:
    """Write ``tensors`` to ``filename`` atomically (temporary file + rename).

    Args:
        tensors (dict[str, torch.Tensor]): as for ``save``.
        filename (str | os.PathLike): the destination (only a regular file or
            nothing there is replaced), or a URL uploaded part by part
            (docs/remote.md).
        metadata (dict[str, str] | None): the header's ``__metadata__``.
        alignment, checksum: as for ``save``.
        storage_options (dict | None): options of the remote filesystem (URLs only).

    Raises:
        ValueError: as for ``save``.
        SafetensorError: bad input; ``SafetensorIOError`` (an ``OSError``) for I/O
            errors, naming the path.

    Example:
        >>> from safetensors.torch import save_file
        >>> save_file({"w": torch.zeros(2, 3)}, "model.safetensors")
    """
    keepalive: List = []
    serialize_file(_flatten_as_ptr(tensors, keepalive), filename, metadata=metadata, alignment=alignment,
                   checksum=checksum, storage_options=storage_options)


def _tobytes(tensor: torch.Tensor, name: Optional[str] = None) -> bytes:
    """The raw little-endian C-order bytes of ``tensor`` (kept for code written
    against safetensors <= 0.7, where this helper existed)."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"Key `{name}` is invalid, expected torch.Tensor but received {type(tensor)}")
    if tensor.layout != torch.strided:
        raise ValueError(_SPARSE.format("tensor", name))
    if not tensor.is_contiguous():
        raise ValueError(_NON_CONTIGUOUS.format(name))
    return to_ndarray(tensor)[0].tobytes()


def _flatten(tensors: Dict[str, torch.Tensor]) -> Dict[str, Dict[str, Any]]:
    """0.7-style flattening: ``{name: {"dtype", "shape", "data": bytes}}``."""
    _evaluate_tensors_for_save(tensors)
    return {k: {"dtype": _dtype_name(v.dtype), "shape": list(v.shape), "data": _tobytes(v, k)}
            for k, v in tensors.items()}


def save_model(model: torch.nn.Module, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None,
               force_contiguous: bool = True, *, alignment: Optional[int] = None,
               checksum: Optional[str] = None) -> None:
    """Save ``model.state_dict()``, writing each group of tied/shared weights
    once (the others are recorded in the metadata as ``removed -> kept``).
    The caller's ``metadata`` dict is not modified.

    Args:
        model (torch.nn.Module): the model.
        filename (str | os.PathLike): the destination.
        metadata (dict[str, str] | None): extra ``__metadata__`` entries.
        force_contiguous (bool): make non-contiguous tensors contiguous instead
            of raising.
        alignment, checksum: as for ``save``.

    Raises:
        ValueError: non-contiguous tensors with ``force_contiguous=False``.

    Example:
        >>> save_model(torch.nn.Linear(4, 4), "model.safetensors")
    """
    state_dict = model.state_dict()
    to_removes = _remove_duplicate_names(state_dict)
    metadata = None if metadata is None else dict(metadata)
    for kept_name, to_remove_group in to_removes.items():
        for to_remove in to_remove_group:
            metadata = {} if metadata is None else metadata
            metadata.setdefault(to_remove, kept_name)
            del state_dict[to_remove]
    if force_contiguous:
        state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    try:
        save_file(state_dict, filename, metadata=metadata, alignment=alignment, checksum=checksum)
    except ValueError as e:
        raise ValueError(
            str(e) + " Or use save_model(..., force_contiguous=True), read the docs for potential caveats."
        ) from e


def _view2torch(safeview) -> Dict[str, torch.Tensor]:
    """``deserialize`` output (``[(name, {"dtype", "shape", "data"})]``) ->
    ``{name: tensor}`` (tensors own their memory, are writable). Kept for code
    written against upstream's helper; ``load`` does not use it (the extension
    builds tensors from bytes, see ``_deserialize_tensors``)."""
    result = {}
    for k, v in safeview:
        dtype, shape = _getdtype(v["dtype"]), storage_shape(v["dtype"], v["shape"])
        if len(v["data"]) == 0:
            result[k] = torch.empty(shape, dtype=dtype)
        else:
            arr = torch.frombuffer(v["data"], dtype=torch.uint8).view(dtype).reshape(shape)
            result[k] = arr if _LITTLE else byteswapped(arr)
    return result


def load(data: bytes) -> Dict[str, torch.Tensor]:
    """Load tensors from the bytes of a safetensors file (``save``'s output).

    Args:
        data (bytes): the file's content.

    Returns:
        dict[str, torch.Tensor]: in file (offset) order; CPU tensors that own
        their memory.

    Raises:
        SafetensorError: "Error while deserializing: ...".

    Example:
        >>> tensors = load(save({"w": torch.zeros(2)}))
    """
    return _safetensors_c._deserialize_tensors(data, "pt")


def load_file(filename: Union[str, os.PathLike], device: Union[str, int] = "cpu", *, backend: Optional[str] = None,
              storage_options: Optional[Dict[str, Any]] = None, verify: bool = False) -> Dict[str, torch.Tensor]:
    """Load every tensor of ``filename`` onto ``device``.

    Args:
        filename (str | os.PathLike): the file, or a URL (docs/remote.md).
        device (str | int): "cpu" (default), "cuda:0", 0, ...
        backend (str | None): "mmap" (large tensors are zero-copy views of a
            private mapping of their own, small ones views of one mapping
            shared by this call: one storage, as upstream) or "pread"
            (everything read into memory). None (default): "pread" on network
            and FUSE file systems and, on the CPU, for a file mostly not in the
            page cache, else "mmap" (docs/design.md, "Choosing how a file is
            read").
        storage_options (dict | None): options for the remote filesystem
            (URLs only).
        verify (bool): check every tensor against the digest the file
            records (docs/integrity.md); a file without digests and a
            tensor that fails raise SafetensorError.

    Returns:
        dict[str, torch.Tensor]: in file (offset) order; no two share memory.

    Raises:
        FileNotFoundError: the file does not exist (and other ``OSError``s).
        SafetensorError: an invalid file.

    Example:
        >>> from safetensors.torch import load_file
        >>> tensors = load_file("model.safetensors", device="cpu")
    """
    with safe_open(filename, framework="pt", device=device, backend=backend, storage_options=storage_options,
                   verify=verify) as f:
        return f.get_tensors()


def load_model(model: torch.nn.Module, filename: Union[str, os.PathLike], strict: bool = True,
               device: Union[str, int] = "cpu", *, backend: Optional[str] = None) -> Tuple[Set[str], List[str]]:
    """Load a file written by ``save_model`` into ``model``.

    Args:
        model (torch.nn.Module): the model to fill (in place).
        filename (str | os.PathLike): the file.
        strict (bool): raise when keys are missing or unexpected.
        device (str | int): where tensors are loaded before copying in.
        backend (str | None): "mmap", "pread" or None, as for ``load_file``.

    Returns:
        tuple[set[str], list[str]]: (missing keys, unexpected keys).

    Raises:
        RuntimeError: with ``strict``, if either is non-empty.

    Example:
        >>> missing, unexpected = load_model(torch.nn.Linear(4, 4), "model.safetensors")
    """
    state_dict = load_file(filename, device=device, backend=backend)
    model_state_dict = model.state_dict()
    to_removes = _remove_duplicate_names(model_state_dict, preferred_names=state_dict.keys())
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = set(missing)
    for to_remove_group in to_removes.values():
        for to_remove in to_remove_group:
            if to_remove not in missing:
                unexpected.append(to_remove)
            else:
                missing.remove(to_remove)
    if strict and (missing or unexpected):
        error = f"Error(s) in loading state_dict for {model.__class__.__name__}:"
        for label, keys in (("Missing", missing), ("Unexpected", unexpected)):
            if keys:
                error += f"\n    {label} key(s) in state_dict: " + ", ".join(f'"{k}"' for k in sorted(keys))
        raise RuntimeError(error)
    return missing, unexpected
from safetensors.distributed import LoadStats, Replicate, Shard, load_distributed  # noqa: E402,F401
