"""Read plans: which tensors a load takes and in what part, shared by
``safe_open(...).prefetch(plan)`` (safetensors.prefetch) and
``load_distributed`` (safetensors.distributed). Needs no framework.

A plan is ``None``, a collection of names, ``{name: placement}`` or a
callable ``plan(name, shape, dtype) -> placement``; a placement is
``Replicate()`` (the whole tensor), ``Shard(dim)`` (one rank's part) or
``None`` (skip)."""
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Tuple, Union

from ._safetensors_c import SafetensorError

__all__ = ["Replicate", "Shard", "Placement", "Plan", "placements", "shard_bounds"]


@dataclass(frozen=True)
class Replicate:
    """Every rank gets the whole tensor."""


@dataclass(frozen=True)
class Shard:
    """Rank ``q`` of ``N`` gets part ``q`` of ``torch.tensor_split(t, N, dim)``:
    parts differ in length by at most one, the first ``size % N`` parts are the
    longer ones, and when ``size < N`` the last ranks get empty parts."""

    dim: int


Placement = Union[Replicate, Shard, None]
Plan = Union[None, Iterable[str], Mapping, Callable[[str, Tuple[int, ...], str], Placement]]


def shard_bounds(length: int, parts: int) -> List[int]:
    """Where each of ``parts`` parts of ``length`` indices starts, and the end:
    part ``q`` is ``bounds[q]:bounds[q + 1]`` (Shard's rule)."""
    return [q * (length // parts) + min(q, length % parts) for q in range(parts + 1)]


def placements(plan: Plan, tensors: Iterable[Tuple[str, tuple, str]], default: Placement,
               caller: str) -> Dict[str, Placement]:
    """``{name: placement}`` of ``tensors`` (``(name, shape, dtype)`` in load
    order) under ``plan``, leaving out the skipped. Names come with
    ``Replicate()``; a mapping's unnamed tensors and every tensor of ``plan=None``
    get ``default``. A name the tensors lack raises SafetensorError, a plan or
    placement of another type TypeError (``caller`` names the function)."""
    tensors = list(tensors)
    if isinstance(plan, (str, bytes)) or not (plan is None or callable(plan) or isinstance(plan, (Mapping, Iterable))):
        raise TypeError(f"{caller}: plan must be None, names, a mapping or a callable, not {type(plan).__name__}")
    if plan is not None and not callable(plan) and not isinstance(plan, Mapping):
        plan = dict.fromkeys(plan, Replicate())
    if isinstance(plan, Mapping):
        known = {name for name, _, _ in tensors}
        missing = sorted(n for n in plan if n not in known)
        if missing:
            shown = ", ".join(repr(n) for n in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise SafetensorError(f"The checkpoint does not contain tensor(s) named in the plan: {shown}")
    out = {}
    for name, shape, dtype in tensors:
        placement = (default if plan is None else plan.get(name, default) if isinstance(plan, Mapping)
                     else plan(name, tuple(shape), dtype))
        if placement is None:
            continue
        if not isinstance(placement, (Replicate, Shard)):
            raise TypeError(f"plan for tensor {name!r} must be Replicate(), Shard(dim) or None, not {placement!r}")
        out[name] = placement
    return out
