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

from safetensors import TensorSpec, deserialize, safe_open, serialize, serialize_file

__all__ = [
    "save",
    "save_file",
    "load",
    "load_file",
    "save_model",
    "load_model",
    "storage_ptr",
    "storage_size",
    "safe_open",
]

_LITTLE = sys.byteorder == "little"


# --------------------------------------------------------------------------
# dtype tables
# --------------------------------------------------------------------------

def _opt(name):
    return getattr(torch, name, None)


_SIZE = {
    torch.int64: 8,
    torch.float32: 4,
    torch.int32: 4,
    torch.bfloat16: 2,
    torch.float16: 2,
    torch.int16: 2,
    torch.uint8: 1,
    torch.int8: 1,
    torch.bool: 1,
    torch.float64: 8,
    torch.complex64: 8,
}
for _name, _size in (
    ("float8_e4m3fn", 1),
    ("float8_e5m2", 1),
    ("float8_e8m0fnu", 1),
    ("float8_e4m3fnuz", 1),
    ("float8_e5m2fnuz", 1),
    ("float4_e2m1fn_x2", 1),
    ("uint16", 2),
    ("uint32", 4),
    ("uint64", 8),
):
    _dt = _opt(_name)
    if _dt is not None:
        _SIZE[_dt] = _size

# header code -> torch dtype.  Unlike upstream 0.8.0 this also maps F8_E8M0
# and F4 (packed float4_e2m1fn_x2), so load(bytes) handles every dtype that
# load_file handles.
_TYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "C64": torch.complex64,
}
for _code, _name in (
    ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
    ("F8_E5M2", "float8_e5m2"),
    ("F8_E5M2FNUZ", "float8_e5m2fnuz"),
    ("F8_E8M0", "float8_e8m0fnu"),
    ("F4", "float4_e2m1fn_x2"),
    ("U64", "uint64"),
    ("U32", "uint32"),
    ("U16", "uint16"),
):
    _dt = _opt(_name)
    if _dt is not None:
        _TYPES[_code] = _dt
del _code, _name, _size, _dt

_F4 = _opt("float4_e2m1fn_x2")


def _getdtype(dtype_str: str) -> torch.dtype:
    """Header dtype code (``"F32"``) -> torch dtype; KeyError when unknown."""
    return _TYPES[dtype_str]


def _dtype_name(dtype: torch.dtype) -> str:
    # "torch.float32" -> "float32": the TensorSpec dtype vocabulary.
    return str(dtype).split(".")[-1]


# --------------------------------------------------------------------------
# shared-storage machinery
# --------------------------------------------------------------------------

def storage_ptr(tensor: torch.Tensor) -> int:
    """Address of the start of the tensor's storage (0 when it has none)."""
    try:
        return tensor.untyped_storage().data_ptr()
    except Exception:
        try:
            return tensor.storage().data_ptr()
        except NotImplementedError:
            return 0


def storage_size(tensor: torch.Tensor) -> int:
    """Size in bytes of the tensor's whole storage."""
    try:
        return tensor.untyped_storage().nbytes()
    except AttributeError:
        try:
            return tensor.storage().size() * _SIZE[tensor.dtype]
        except NotImplementedError:
            return tensor.nelement() * _SIZE[tensor.dtype]
    except NotImplementedError:
        return tensor.nelement() * _SIZE[tensor.dtype]


def _end_ptr(tensor: torch.Tensor) -> int:
    """One past the last byte the tensor can address (``data_ptr()`` if empty).

    Computed from the strides, so it also works for tensors that cannot be
    flattened with ``view(-1)`` (transposed or otherwise strided views).
    """
    if tensor.nelement():
        last = 0
        for size, stride in zip(tensor.shape, tensor.stride()):
            last += (size - 1) * stride
        return tensor.data_ptr() + (last + 1) * tensor.element_size()
    return tensor.data_ptr()


def _filter_shared_not_shared(tensors: List[Set[str]], state_dict: Dict[str, torch.Tensor]) -> List[Set[str]]:
    """Split groups of names that share a storage into clusters of names whose
    byte ranges really overlap (disjoint views of one storage are fine)."""
    filtered = []
    for shared in tensors:
        if len(shared) < 2:
            filtered.append(shared)
            continue
        areas = []
        for name in shared:
            t = state_dict[name]
            areas.append((t.data_ptr(), _end_ptr(t), name))
        areas.sort()
        _, last_stop, last_name = areas[0]
        filtered.append({last_name})
        for start, stop, name in areas[1:]:
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
        if v.device == torch.device("meta"):
            continue
        ptr = storage_ptr(v)
        size = storage_size(v)
        if ptr != 0 and size != 0:
            groups[(v.device, ptr, size)].add(k)
    return _filter_shared_not_shared(list(groups.values()), state_dict)


def _is_complete(tensor: torch.Tensor) -> bool:
    """True when the tensor covers its whole storage, starting at its start."""
    return tensor.data_ptr() == storage_ptr(tensor) and tensor.nelement() * _SIZE[tensor.dtype] == storage_size(
        tensor
    )


def _remove_duplicate_names(
    state_dict: Dict[str, torch.Tensor],
    *,
    preferred_names: Optional[List[str]] = None,
    discard_names: Optional[List[str]] = None,
) -> Dict[str, List[str]]:
    """For each cluster of overlapping tensors pick one name to keep
    (complete, then not discarded, then preferred; smallest name wins) and
    list the others (sorted) under it."""
    preferred = set(preferred_names) if preferred_names is not None else set()
    discard = set(discard_names) if discard_names is not None else set()

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
        keep_name = sorted(complete_names)[0]
        not_discarded = complete_names.difference(discard)
        if not_discarded:
            keep_name = sorted(not_discarded)[0]
        if preferred:
            chosen = preferred.intersection(complete_names)
            if chosen:
                keep_name = sorted(chosen)[0]
        for name in sorted(shared):
            if name != keep_name:
                to_remove[keep_name].append(name)
    return to_remove


# --------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------

def _evaluate_tensors_for_save(tensors: Dict[str, torch.Tensor]) -> None:
    """Validate a dict before saving, in upstream's order: dict, tensor values,
    sparse layouts, shared memory, contiguity.  Raises on the first problem."""
    if not isinstance(tensors, dict):
        raise ValueError(f"Expected a dict of [str, torch.Tensor] but received {type(tensors)}")

    invalid = []
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"Key `{k}` is invalid, expected torch.Tensor but received {type(v)}")
        if v.layout != torch.strided:
            invalid.append(k)
    if invalid:
        raise ValueError(
            f"You are trying to save a sparse tensors: `{invalid}` which this library does not support."
            " You can make it a dense tensor before saving with `.to_dense()` but be aware this might"
            " make a much larger file than needed."
        )

    shared = _find_shared_tensors(tensors)
    failing = [names for names in shared if len(names) > 1]
    if failing:
        raise RuntimeError(
            f"""
            Some tensors share memory, this will lead to duplicate memory on disk and potential differences when loading them again: {failing}.
            A potential way to correctly save your model is to use `save_model`.
            More information at https://huggingface.co/docs/safetensors/torch_shared_tensors
            """
        )

    for k, v in tensors.items():
        if not v.is_contiguous():
            raise ValueError(
                f"You are trying to save a non contiguous tensor: `{k}` which is not allowed. It either means you"
                " are trying to save tensors which are reference of each other in which case it's recommended to"
                " save only the full tensors, and reslice at load time, or simply call `.contiguous()` on your"
                " tensor to pack it before saving."
            )


def _byteswapped(t: torch.Tensor) -> torch.Tensor:
    # Big-endian hosts only: reverse the bytes of each scalar (complex: of
    # each of the two float32 halves).
    unit = 4 if t.dtype == torch.complex64 else t.element_size()
    if unit == 1 or t.nelement() == 0:
        return t
    raw = t.reshape(-1).view(torch.uint8).view(-1, unit).flip(-1).contiguous()
    return raw.view(t.dtype).reshape(t.shape)


def _cpu_ready(t: torch.Tensor) -> torch.Tensor:
    """A dense, CPU, little-endian tensor with the same values as ``t``."""
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if not t.is_contiguous():  # only after a device copy of an odd layout
        t = t.contiguous()
    if not _LITTLE:
        t = _byteswapped(t)
    return t


def _flatten_as_ptr(tensors: Dict[str, torch.Tensor], keep_alive_buffer: List) -> Dict[str, TensorSpec]:
    """Validate ``tensors`` and describe each one as a ``TensorSpec`` pointing
    at CPU memory.  The CPU tensors the pointers refer to are appended to
    ``keep_alive_buffer``, which the caller keeps alive until the write is done."""
    _evaluate_tensors_for_save(tensors)
    specs = {}
    for k, v in tensors.items():
        t = _cpu_ready(v)
        keep_alive_buffer.append(t)
        nbytes = t.nelement() * t.element_size()
        ptr = t.data_ptr() if nbytes else 0
        specs[k] = TensorSpec(dtype=_dtype_name(t.dtype), shape=list(t.shape), data_ptr=ptr, data_len=nbytes)
    return specs


def save(tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """Serialize ``tensors`` to the bytes of a safetensors file."""
    keepalive: List = []
    specs = _flatten_as_ptr(tensors, keepalive)
    try:
        return serialize(specs, metadata=metadata)
    finally:
        del keepalive


def save_file(
    tensors: Dict[str, torch.Tensor],
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
) -> None:
    """Write ``tensors`` to ``filename`` (atomically: temp file + rename)."""
    keepalive: List = []
    specs = _flatten_as_ptr(tensors, keepalive)
    try:
        serialize_file(specs, filename, metadata=metadata)
    finally:
        del keepalive


def _to_ndarray(tensor: torch.Tensor):
    """``(bytes_view, cpu_tensor)``: the CPU, little-endian bytes of ``tensor``
    as a 1-D numpy uint8 array (a view of ``cpu_tensor``, which must be kept
    alive with it).  Imports numpy."""
    import numpy as np

    t = _cpu_ready(tensor)
    nbytes = t.nelement() * t.element_size()
    if nbytes == 0:
        return np.empty((0,), dtype=np.uint8), t
    return t.reshape(-1).view(torch.uint8).numpy(), t


def _tobytes(tensor: torch.Tensor, name: Optional[str] = None) -> bytes:
    """The raw little-endian C-order bytes of ``tensor`` (kept for code written
    against safetensors <= 0.7, where this helper existed)."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"Key `{name}` is invalid, expected torch.Tensor but received {type(tensor)}")
    if tensor.layout != torch.strided:
        raise ValueError(
            f"You are trying to save a sparse tensor: `{name}` which this library does not support."
            " You can make it a dense tensor before saving with `.to_dense()` but be aware this might"
            " make a much larger file than needed."
        )
    if not tensor.is_contiguous():
        raise ValueError(
            f"You are trying to save a non contiguous tensor: `{name}` which is not allowed. It either means you"
            " are trying to save tensors which are reference of each other in which case it's recommended to"
            " save only the full tensors, and reslice at load time, or simply call `.contiguous()` on your"
            " tensor to pack it before saving."
        )
    t = _cpu_ready(tensor)
    nbytes = t.nelement() * t.element_size()
    if nbytes == 0:
        return b""
    return bytes(memoryview(t.reshape(-1).view(torch.uint8).numpy()))


def _flatten(tensors: Dict[str, torch.Tensor]) -> Dict[str, Dict[str, Any]]:
    """0.7-style flattening: ``{name: {"dtype", "shape", "data": bytes}}``."""
    _evaluate_tensors_for_save(tensors)
    return {
        k: {"dtype": _dtype_name(v.dtype), "shape": list(v.shape), "data": _tobytes(v, k)} for k, v in tensors.items()
    }


def save_model(
    model: torch.nn.Module,
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
    force_contiguous: bool = True,
) -> None:
    """Save ``model.state_dict()``, writing each group of tied/shared weights
    once (the others are recorded in the metadata as ``removed -> kept``).
    The caller's ``metadata`` dict is not modified."""
    state_dict = model.state_dict()
    to_removes = _remove_duplicate_names(state_dict)
    metadata = None if metadata is None else dict(metadata)
    for kept_name, to_remove_group in to_removes.items():
        for to_remove in to_remove_group:
            if metadata is None:
                metadata = {}
            if to_remove not in metadata:
                metadata[to_remove] = kept_name
            del state_dict[to_remove]
    if force_contiguous:
        state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    try:
        save_file(state_dict, filename, metadata=metadata)
    except ValueError as e:
        raise ValueError(
            str(e) + " Or use save_model(..., force_contiguous=True), read the docs for potential caveats."
        ) from e


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------

def _storage_shape(dtype_str: str, shape: List[int]) -> List[int]:
    # F4 is stored as torch.float4_e2m1fn_x2: two values per element.
    if dtype_str == "F4" and shape:
        shape = list(shape)
        shape[-1] //= 2
    return shape


def _view2torch(safeview) -> Dict[str, torch.Tensor]:
    """``deserialize`` output (``[(name, {"dtype", "shape", "data"})]``) ->
    ``{name: tensor}`` (tensors own their memory, are writable)."""
    result = {}
    for k, v in safeview:
        dtype = _getdtype(v["dtype"])
        shape = _storage_shape(v["dtype"], v["shape"])
        data = v["data"]
        if len(data) == 0:
            arr = torch.empty(shape, dtype=dtype)
        else:
            arr = torch.frombuffer(data, dtype=torch.uint8).view(dtype).reshape(shape)
            if not _LITTLE:
                arr = _byteswapped(arr)
        result[k] = arr
    return result


def load(data: bytes) -> Dict[str, torch.Tensor]:
    """Load tensors from the bytes of a safetensors file (``save``'s output).

    The dict is in file (offset) order; tensors are CPU copies."""
    return _view2torch(deserialize(data))


def load_file(
    filename: Union[str, os.PathLike],
    device: Union[str, int] = "cpu",
    *,
    backend: str = "mmap",
    storage_options: Optional[Dict[str, Any]] = None,
) -> Dict[str, torch.Tensor]:
    """Load every tensor of ``filename`` (a path, or a URL: docs/remote.md)
    onto ``device`` (dict in file order)."""
    with safe_open(filename, framework="pt", device=device, backend=backend, storage_options=storage_options) as f:
        return f.get_tensors()


def load_model(
    model: torch.nn.Module,
    filename: Union[str, os.PathLike],
    strict: bool = True,
    device: Union[str, int] = "cpu",
    *,
    backend: str = "mmap",
) -> Tuple[Set[str], List[str]]:
    """Load a file written by ``save_model`` into ``model``.

    Returns ``(missing, unexpected)`` (a set and a list, like upstream);
    with ``strict`` raises RuntimeError if either is non-empty."""
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
        missing_keys = ", ".join([f'"{k}"' for k in sorted(missing)])
        unexpected_keys = ", ".join([f'"{k}"' for k in sorted(unexpected)])
        error = f"Error(s) in loading state_dict for {model.__class__.__name__}:"
        if missing:
            error += f"\n    Missing key(s) in state_dict: {missing_keys}"
        if unexpected:
            error += f"\n    Unexpected key(s) in state_dict: {unexpected_keys}"
        raise RuntimeError(error)
    return missing, unexpected
