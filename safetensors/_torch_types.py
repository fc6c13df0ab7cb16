"""The torch side of the core's dtype table (docs/format.md §3), shared by
``safetensors.torch`` and ``safetensors.distributed``: header code -> torch
dtype (for the dtypes this torch has: not F6), torch dtype -> bytes per
element, header code -> header values per torch element (2 for F4:
``torch.float4_e2m1fn_x2`` holds pairs); the torch shape of a header shape;
the byte swap of big-endian hosts; a tensor's file bytes."""

import sys
from typing import List, Sequence

import torch

from safetensors import SafetensorError
from safetensors._safetensors_c import _dtype_table

TYPES = {}
SIZE = {}
PACK = {}
for _code, _bits, _type_name, _, _pack in _dtype_table():
    _dtype = getattr(torch, _type_name, None) if _type_name else None
    if isinstance(_dtype, torch.dtype):
        TYPES[_code], SIZE[_dtype], PACK[_code] = _dtype, _bits * _pack // 8, _pack
del _code, _bits, _type_name, _pack, _dtype


def storage_shape(code: str, shape: Sequence[int], what: str = "") -> List[int]:
    """The torch shape of a tensor of header dtype ``code`` and shape ``shape``:
    its last dim counts torch elements, so the values per element must divide
    it (SafetensorError, naming ``what``, default "<code> tensor", if not)."""
    pack = PACK.get(code, 1)
    if pack == 1 or not shape:
        return list(shape)
    if shape[-1] % pack:
        raise SafetensorError(
            f"{what or code + ' tensor'} with a last dimension of {shape[-1]}: {TYPES[code]} holds "
            f"{pack} values per element, so the last dimension must be a multiple of {pack}"
        )
    return list(shape[:-1]) + [shape[-1] // pack]


def byteswapped(t: torch.Tensor) -> torch.Tensor:
    """``t`` with the bytes of each scalar reversed (complex64: of each
    float32 half), between little-endian files and a big-endian host."""
    unit = 4 if t.dtype == torch.complex64 else t.element_size()
    if unit == 1 or t.nelement() == 0:
        return t
    raw = t.reshape(-1).view(torch.uint8).view(-1, unit).flip(-1).contiguous()
    return raw.view(t.dtype).reshape(t.shape)


def cpu_ready(t: torch.Tensor) -> torch.Tensor:
    """A dense, CPU, little-endian tensor with the same values as ``t``."""
    t = t.to("cpu").resolve_conj().resolve_neg().contiguous()  # each returns t itself when there is nothing to do
    return t if sys.byteorder == "little" else byteswapped(t)


def to_ndarray(tensor: torch.Tensor):
    """``(bytes_view, cpu_tensor)``: the bytes ``tensor`` has in a file (CPU,
    little-endian, C order) as a 1-D numpy uint8 array, a view of
    ``cpu_tensor``, which must be kept alive with it.  Needs numpy."""
    t = cpu_ready(tensor)
    return t.reshape(-1).view(torch.uint8).numpy(), t
