"""Load a checkpoint into every rank of a ``torch.distributed`` process group,
reading each byte from storage once and handing each rank only its part.

Public names (re-exported by ``safetensors.torch``): ``load_distributed``,
``Replicate``, ``Shard``, ``LoadStats``.  See ``docs/distributed.md``.

How a load goes (every step is the same on every rank, so the collectives
line up):

1. Sources.  Rank 0 reads ``model.safetensors.index.json`` (if given); the
   ranks check they were all given the same files.
2. Headers.  File ``i``'s header is read and validated by rank ``i % N``
   with ``safe_open`` (the C reader's rules); the tensor tables (the
   handle's ``_table()``: absolute data offsets, file order) are
   all-gathered.
3. Plan.  Every rank evaluates the sharding plan for every tensor and opens
   the files it will read, checking that its copy of each is the one the
   header came from (size, and for a local file the copy digest of
   ``_LocalFile.digest``; ETag/version for a URL).  A small all-gather
   agrees on success and on a digest of the plan before any data moves, so
   a failure on one rank (bad file, a copy that differs, missing tensor,
   plans that differ) raises on every rank.
4. Data, in three kinds of work:
   - a shard whose bytes are one contiguous range, or runs of at least
     ``_DIRECT_RUN`` bytes, is read by its owner straight into its output:
     nothing is exchanged;
   - replicated tensors are laid out in one buffer; each round, every rank
     reads an equal slot of it and an in-place all-gather fills the rest;
   - shards made of short strided runs (a narrow last dimension split
     ``N`` ways) are read in contiguous slots of whole rows, balanced
     over the ranks, packed per destination and exchanged with one
     ``all_to_all_single`` per round.
   Before every exchange a one-integer all-reduce says whether any rank
   failed to read, so nobody waits on a rank that has given up.

Raw byte ranges are read straight into the output or exchange buffers
(ranges here need not fall on rows): through the C handle of a local file
(``safe_open(..., backend="pread")``: its ``_table()`` gives every tensor's
absolute offsets, its ``_read_into`` reads a range into a buffer), and with
ranged GETs of ``safetensors.remote`` (pinned to the object's ETag/version,
retried) for URLs, whose headers go through the same C validation as local
ones.  ``_open_file`` is the one place that picks how a source is read.
"""

import datetime
import errno
import hashlib
import math
import mmap
import os
import pickle
import sys
import time
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist

from safetensors import SafetensorError, safe_open
from safetensors import remote as _remote
from safetensors._index import parse_index, read_index, shard_path, shard_url
from safetensors._safetensors_c import _dtype_table, _header_length, _parse_header

__all__ = ["LoadStats", "Replicate", "Shard", "load_distributed"]

# The core's dtype table: header code -> (bytes per torch element, header
# values per torch element (2 for F4: torch.float4_e2m1fn_x2 holds pairs),
# torch dtype or None where this torch has none (F6)).
_DTYPES = {
    code: (bits * pack // 8, pack, getattr(torch, type_name, None) if type_name else None)
    for code, bits, type_name, _, pack in _dtype_table()
}

# A shard made of runs at least this long is read by its owner run by run;
# shorter runs are read as whole rows by one rank and exchanged.  At 1 MiB the
# pages two ranks share at run edges are under 1% of what they read.
_DIRECT_RUN = 1 << 20
# Replicated tensors start on this boundary in the gathered buffer, so each can
# be viewed with its dtype (and is aligned for GPU kernels).
_ALIGN = 64
# The copy digest of a local file (see _LocalFile.digest) covers its header
# and _SAMPLES blocks of _SAMPLE bytes of its data section.
_SAMPLE = 64 << 10
_SAMPLES = 9


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
Plan = Union[None, Mapping, Callable[[str, Tuple[int, ...], str], Placement]]


@dataclass
class LoadStats:
    """Counters of one rank, added to by each ``load_distributed`` call it is
    passed to.

    ``bytes_read``: bytes this rank read from storage (tensor data plus the
    headers it validated, ``header_bytes_read`` of them, plus
    ``check_bytes_read``: the header and sampled data bytes read to compare
    this rank's copy of a local file with the copy its header came from, see
    ``_LocalFile.digest``).  ``bytes_sent`` and
    ``bytes_received``: tensor payload this rank exchanged with the other
    ranks (alignment padding included, small control messages not; the
    backend's algorithm may forward more on the wire, e.g. a ring
    all-gather).  ``rounds``: data exchanges; ``seconds``: wall time."""

    bytes_read: int = 0
    header_bytes_read: int = 0
    check_bytes_read: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    collectives: int = 0
    rounds: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------------------
# process group plumbing
# ---------------------------------------------------------------------------

class _Group:
    """The process group, the exchange device and the timeout; a group of one
    when torch.distributed is not initialized (no collectives then)."""

    def __init__(self, group, device: torch.device, timeout, stats: LoadStats):
        self.stats = stats
        self.timeout = _as_timedelta(timeout)
        if group is None and not (dist.is_available() and dist.is_initialized()):
            self.group, self.rank, self.size = None, 0, 1
            self.xdev = torch.device("cpu")
            return
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        if self.rank < 0:
            raise ValueError("load_distributed: this process is not a member of the given process group")
        backend = str(dist.get_backend(group)).lower()
        gpu_backend = any(name in backend for name in ("nccl", "xccl", "hccl"))
        cpu_backend = any(name in backend for name in ("gloo", "mpi"))
        if device.type != "cpu" and gpu_backend:
            self.xdev = device          # exchange on the device (NCCL)
        elif cpu_backend:
            self.xdev = torch.device("cpu")   # exchange on CPU, then move
        else:
            raise ValueError(
                f"load_distributed: the process group's backend ({backend}) cannot exchange tensors on {device}; "
                "use device='cuda:<local rank>' with NCCL, or a gloo group for CPU"
            )

    def wait(self, work) -> None:
        self.stats.collectives += 1
        if work is None:
            return
        if self.timeout is None:
            work.wait()
        else:
            work.wait(self.timeout)

    def all_gather(self, out: torch.Tensor, mine: torch.Tensor) -> None:
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        self.wait(gather(out, mine, group=self.group, async_op=True))

    def all_to_all(self, out, inp, out_splits, in_splits) -> None:
        self.wait(dist.all_to_all_single(out, inp, out_splits, in_splits, group=self.group, async_op=True))

    def any_failed(self, failed: bool) -> bool:
        if self.size == 1:
            return failed
        flag = torch.tensor([1 if failed else 0], dtype=torch.int32, device=self.xdev)
        self.wait(dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True))
        return bool(flag.item())

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj`` (pickled: the ranks of a job trust each other,
        as torch's own object collectives do)."""
        if self.size == 1:
            return [obj]
        payload = pickle.dumps(obj)
        sizes = torch.zeros(self.size, dtype=torch.int64, device=self.xdev)
        self.all_gather(sizes, torch.tensor([len(payload)], dtype=torch.int64, device=self.xdev))
        sizes = sizes.tolist()
        width = max(sizes)
        mine = torch.zeros(width, dtype=torch.uint8)
        if payload:
            mine[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        everyone = torch.empty(width * self.size, dtype=torch.uint8, device=self.xdev)
        self.all_gather(everyone, mine.to(self.xdev))
        everyone = everyone.cpu()
        return [pickle.loads(everyone[r * width:r * width + sizes[r]].numpy().tobytes()) for r in range(self.size)]

    def agree(self, step: Callable, *args):
        """Runs ``step`` here, gathers every rank's result, and raises on every
        rank if it failed on any.  Returns the list of results."""
        error, result = None, None
        try:
            result = step(*args)
        except Exception as exc:  # reported to every rank below
            error = exc
        results = self.gather_objects((_portable(error), result))
        _raise_if_failed([e for e, _ in results], error, self.rank)
        return [r for _, r in results]

    def check_reads(self, error: Optional[BaseException]) -> None:
        """Collective: raises on every rank if any rank's reads failed."""
        if not self.any_failed(error is not None):
            return
        errors = self.gather_objects(_portable(error))
        _raise_if_failed(errors, error, self.rank)


def _as_timedelta(timeout):
    if timeout is None or isinstance(timeout, datetime.timedelta):
        return timeout
    return datetime.timedelta(seconds=float(timeout))


def _portable(error: Optional[BaseException]):
    """``error`` if it survives pickling, else a RuntimeError with its text."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _raise_if_failed(errors: list, own: Optional[BaseException], rank: int) -> None:
    """Every rank raises the same exception: the lowest failing rank's (its
    type and message), noting every rank that failed."""
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if not failed:
        return
    first_rank, first = failed[0]
    exc = own if (own is not None and first_rank == rank) else first
    summary = "; ".join(f"rank {r}: {type(e).__name__}: {e}" for r, e in failed)
    if hasattr(exc, "add_note"):
        exc.add_note(f"load_distributed failed on {len(failed)} of {len(errors)} ranks ({summary})")
    if exc is own:
        raise exc
    raise exc from own


# ---------------------------------------------------------------------------
# sources and headers
# ---------------------------------------------------------------------------

def _is_url(source) -> bool:
    return isinstance(source, str) and _remote.is_remote(source)


def _remote_bytes(source, offset: int, count: int) -> bytes:
    """``count`` bytes at ``offset`` of a byte source (remote.open_source)."""
    data = bytearray(count)
    source.read_many([(offset, memoryview(data))])
    return bytes(data)


def _resolve_source(source, rank: int, storage_options: Optional[dict] = None):
    """-> ``("files", [paths or URLs])`` or, on rank 0 for an index,
    ``("index", [paths or URLs], {name: file index})``; ``("index", None,
    None)`` elsewhere."""
    if isinstance(source, (str, os.PathLike)):
        path = _remote.local_path(os.fspath(source))
        if path.split("?", 1)[0].endswith(".json"):
            return ("index",) + (_read_index(path, storage_options) if rank == 0 else (None, None))
        return ("files", [path], None)
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        paths = [_remote.local_path(os.fspath(s)) for s in source]
        if len(set(paths)) != len(paths):
            raise ValueError("load_distributed: the same file is listed twice")
        return ("files", paths, None)
    raise TypeError(
        "load_distributed: source must be a path or URL, a list of them, or a model.safetensors.index.json "
        f"path or URL, not {type(source).__name__}"
    )


def _read_index(path: str, storage_options: Optional[dict] = None):
    """(file paths or URLs, sorted; {tensor name: position in them}) of an
    index, through the one index reader (safetensors._index)."""
    if _is_url(path):
        index = _remote.open_source(path, storage_options)
        try:
            weight_map, _ = parse_index(_remote_bytes(index, 0, index.size), path)
        finally:
            index.close()
        where = shard_url
    else:
        weight_map, _ = read_index(path)
        where = shard_path
    names = sorted(set(weight_map.values()))
    position = {n: i for i, n in enumerate(names)}
    return [where(path, n) for n in names], {k: position[v] for k, v in weight_map.items()}


def _read_header(path: str, storage_options: Optional[dict] = None) -> dict:
    """Validates ``path``'s header with the C reader and returns its table:
    ``size``, ``identity`` (what every rank's copy must match: the copy
    digest of a local file, the ETag/version of a URL), ``data_start``,
    ``header_read`` and ``check_read`` (bytes read) and ``tensors`` as (name,
    dtype, shape, file offset, nbytes) in file order."""
    if _is_url(path):
        return _read_remote_header(path, storage_options)
    copy = _LocalFile(path)
    try:
        digest, checked = copy.digest()
    finally:
        copy.close()
    st = os.stat(path)
    if (st.st_ino, st.st_size, st.st_mtime_ns) != (copy.stat.st_ino, copy.stat.st_size, copy.stat.st_mtime_ns):
        raise SafetensorError(f"{path}: the file changed while its header was being read")
    tensors = [(name, dtype, tuple(shape), begin, end - begin) for name, dtype, shape, begin, end in copy.table]
    return {"size": st.st_size, "identity": digest, "data_start": copy.data_start, "header_read": copy.data_start,
            "check_read": checked, "tensors": tensors}


def _read_remote_header(url: str, storage_options: Optional[dict]) -> dict:
    # The length prefix, then exactly the header (two ranged reads), so that
    # no tensor bytes are fetched twice; checked by the C reader's rules.
    source = _remote.open_source(url, storage_options, head_bytes=8)
    try:
        size = source.size
        data_start = 8 + _header_length(_remote_bytes(source, 0, min(8, size)), size)
        entries, _ = _parse_header(_remote_bytes(source, 8, data_start - 8), size)
    finally:
        source.close()
    tensors = [(name, dtype, tuple(shape), data_start + begin, end - begin)
               for name, dtype, shape, begin, end in entries]
    # header_read: the bytes actually fetched (equal to data_start here).
    return {"size": size, "identity": source.identity, "data_start": data_start,
            "header_read": data_start, "check_read": 0, "tensors": tensors}


# ---------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------

class _Job:
    """One tensor to load: where it is and what this load does with it.

    Its bytes are viewed as ``[A, B, C]``: ``B`` the sharded dimension (1 for
    replicated tensors), ``A`` the product of the dimensions before it, ``C``
    the bytes of one index of ``B``.  Rank ``q`` owns ``B`` indices
    ``bounds[q]:bounds[q + 1]``."""

    __slots__ = ("name", "file", "dtype", "shape", "offset", "nbytes", "kind", "dim", "A", "B", "C",
                 "bounds", "out", "pos")

    def part(self, q: int) -> int:
        return self.bounds[q + 1] - self.bounds[q]


def _placement(plan, default, name, shape, dtype):
    if plan is None:
        return default
    if isinstance(plan, Mapping):
        return plan.get(name, default)
    return plan(name, shape, dtype)


def _make_jobs(tensors: List[tuple], plan, default, size: int) -> List[_Job]:
    """``tensors``: (name, file, dtype, shape, offset, nbytes) in checkpoint
    order.  Raises for a plan that names unknown tensors or cannot apply."""
    if isinstance(plan, Mapping):
        known = {t[0] for t in tensors}
        missing = sorted(n for n in plan if n not in known)
        if missing:
            shown = ", ".join(repr(n) for n in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise SafetensorError(f"The checkpoint does not contain tensor(s) named in the plan: {shown}")
    elif plan is not None and not callable(plan):
        raise TypeError(f"load_distributed: plan must be a mapping or a callable, not {type(plan).__name__}")
    jobs = []
    for name, file, dtype, shape, offset, nbytes in tensors:
        placement = _placement(plan, default, name, shape, dtype)
        if placement is None:
            continue
        itemsize, pack, torch_dtype = _DTYPES[dtype]
        if torch_dtype is None:
            raise TypeError(f"tensor {name!r} has dtype {dtype}, which this torch build cannot represent")
        if shape and shape[-1] % pack:
            raise SafetensorError(f"tensor {name!r}: {dtype} with a last dimension of {shape[-1]}: {torch_dtype} "
                                  f"holds {pack} values per element, so the last dimension must be a multiple of {pack}")
        job = _Job()
        job.name, job.file, job.dtype, job.shape, job.offset, job.nbytes = name, file, dtype, shape, offset, nbytes
        storage = _storage_shape(dtype, shape)
        if isinstance(placement, Replicate):
            job.kind, job.dim = "replicate", None
            job.A, job.B, job.C = 1, 1, nbytes
            job.bounds = [0] + [1] * size
            job.out = tuple(storage)
        elif isinstance(placement, Shard):
            ndim = len(shape)
            dim = placement.dim
            if not isinstance(dim, int) or not -ndim <= dim < max(ndim, 1) or ndim == 0:
                raise ValueError(f"cannot shard tensor {name!r} of shape {list(shape)} along dim {dim}")
            dim %= ndim
            length = shape[dim]
            bounds = [q * (length // size) + min(q, length % size) for q in range(size + 1)]
            if dim == ndim - 1 and pack > 1:
                if any(b % pack for b in bounds):
                    raise ValueError(
                        f"cannot shard {dtype} tensor {name!r} of shape {list(shape)} along its last dim into "
                        f"{size} parts: {torch_dtype} packs {pack} values per element and the parts would not "
                        "start on whole elements"
                    )
                bounds = [b // pack for b in bounds]
            job.dim, job.bounds = dim, bounds
            job.A = math.prod(storage[:dim])
            job.B = storage[dim]
            job.C = math.prod(storage[dim + 1:]) * itemsize
            runs = [job.part(q) * job.C for q in range(size) if job.part(q)]
            job.kind = "direct" if job.A == 1 or not runs or min(runs) >= _DIRECT_RUN else "exchange"
            job.out = None   # per rank: see _out_shape
        else:
            raise TypeError(
                f"plan for tensor {name!r} must be Replicate(), Shard(dim) or None, not {placement!r}"
            )
        jobs.append(job)
    return jobs


def _storage_shape(dtype: str, shape: Sequence[int]) -> List[int]:
    """The torch shape of a header shape: its last dim counts torch elements
    (pairs of F4 values: the dtype table's values per element)."""
    return list(shape[:-1]) + [shape[-1] // _DTYPES[dtype][1]] if shape else []


def _out_shape(job: _Job, rank: int) -> Tuple[int, ...]:
    if job.kind == "replicate":
        return job.out
    storage = _storage_shape(job.dtype, job.shape)
    storage[job.dim] = job.part(rank)
    return tuple(storage)


def _digest(jobs: List[_Job], chunk_bytes: int, size: int) -> str:
    text = repr((size, chunk_bytes, [(j.name, j.file, j.kind, j.dim) for j in jobs]))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

class _LocalFile:
    """A local file, read through its C handle (``safe_open(path, "pt",
    backend="pread")``: opening validates the header): ``table`` is the
    handle's ``_table()`` (name, dtype, shape, begin, end; absolute offsets,
    file order) and ``read_into`` its ``_read_into``.  Given the table of the
    rank that read its header, the file must be the same copy: same size and
    same ``digest`` (``check_read``: the bytes that took, this copy's header
    included); ``rank``: this rank, for the message."""

    def __init__(self, path: str, table: Optional[dict] = None, rank: int = 0):
        self.path, self.check_read = path, 0
        self.stat = os.stat(path)
        self.size = self.stat.st_size
        self.handle = safe_open(path, "pt", backend="pread")
        try:
            self.table = self.handle._table()
            # The reader guarantees the data section: from the first tensor to the end of the file.
            self.data_start = self.table[0][3] if self.table else self.size
            if table is None:
                return
            if self.size != table["size"]:
                differs = f"{self.size} bytes against {table['size']}"
            else:
                digest, checked = self.digest()
                self.check_read = self.data_start + checked
                differs = None if digest == table["identity"] else "same size, but the header or sampled data differ"
        except BaseException:
            self.close()
            raise
        if differs:
            self.close()
            raise SafetensorError(
                f"{path}: rank {rank}'s copy differs from the copy rank {table['reader']} read its header from "
                f"({differs}): every rank must see the same file (node-local copies must be identical), unchanged "
                "during the load"
            )

    def digest(self) -> Tuple[str, int]:
        """(SHA-256 hex, bytes read) of the file's header bytes (length prefix
        and JSON, ``[0, data_start)``) and of _SAMPLES blocks of _SAMPLE bytes
        of its data section: the first, the last and the others evenly spaced
        between them (the whole section when it is smaller than that).  One
        read per block, so that ranks can compare copies without reading them
        whole; copies that differ only outside these blocks look the same."""
        data = self.size - self.data_start
        spans = [(0, self.data_start)]
        if data <= _SAMPLES * _SAMPLE:
            spans.append((self.data_start, data))
        else:
            spans += [(self.data_start + (data - _SAMPLE) * k // (_SAMPLES - 1), _SAMPLE) for k in range(_SAMPLES)]
        sha = hashlib.sha256()
        for offset, length in spans:
            block = bytearray(length)
            self.handle._read_into(offset, block)
            sha.update(block)
        return sha.hexdigest(), sum(length for _, length in spans)

    def read_into(self, offset: int, buffers: Sequence) -> None:
        """Fills ``buffers`` (writable, contiguous) with consecutive bytes from ``offset``."""
        for buffer in buffers:
            self.handle._read_into(offset, buffer)
            offset += buffer.nbytes

    def close(self) -> None:
        self.handle.__exit__(None, None, None)


class _RemoteFile:
    """A URL read as a byte source (``remote.open_source``: pinned to its
    ETag/version, retried, long ranges in parallel chunks, and every read into
    the caller's buffers stopped before ``read_many`` returns, also when
    interrupted), checked to be the object the header's reader saw."""

    check_read = 0   # the ETag/version pins the copy

    def __init__(self, url: str, table: dict, storage_options: Optional[dict]):
        self.path = url
        self.source = _remote.open_source(url, storage_options, head_bytes=8)
        size, identity = self.source.size, self.source.identity
        if size != table["size"] or identity != table["identity"]:
            self.source.close()
            raise SafetensorError(
                f"{url}: this rank sees a different object (size {size}, ETag/version {identity}) than "
                f"the rank that read its header (size {table['size']}, ETag/version {table['identity']}): "
                "replaced during the load"
            )

    def read_into(self, offset: int, buffers: Sequence) -> None:
        """Fills ``buffers`` (writable, contiguous) with consecutive bytes from ``offset``."""
        requests = []
        for buffer in buffers:
            view = memoryview(buffer).cast("B")
            requests.append((offset, view))
            offset += len(view)
        if offset > self.source.size:
            raise OSError(errno.EIO, f"bytes up to {offset - 1} are past the end of the object "
                          f"({self.source.size} bytes)", self.path)
        self.source.read_many(requests)

    def close(self) -> None:
        self.source.close()


def _open_file(path: str, table: dict, storage_options: Optional[dict], rank: int):
    """A reader of ``path``'s bytes (``read_into(offset, buffers)``,
    ``close()``, ``check_read``), checked to be the copy ``table`` was read
    from: the one place that picks how a source is read."""
    if _is_url(path):
        return _RemoteFile(path, table, storage_options)
    return _LocalFile(path, table, rank)


class _Reader:
    """Reads byte ranges of the checkpoint's files (local or remote) into
    tensors, counting them.

    Pieces go straight into CPU tensors; device tensors are filled through a
    host staging buffer of ``chunk_bytes`` (pinned when CUDA is there)."""

    def __init__(self, paths: List[str], tables: List[dict], stats: LoadStats, chunk_bytes: int,
                 storage_options: Optional[dict] = None, rank: int = 0):
        self.paths, self.tables, self.stats, self.chunk_bytes, self.rank = paths, tables, stats, chunk_bytes, rank
        self.storage_options = storage_options
        self.files: Dict[int, Union[_LocalFile, _RemoteFile]] = {}
        self.staging: Optional[torch.Tensor] = None

    def open(self, file: int) -> None:
        if file not in self.files:
            self.files[file] = opened = _open_file(self.paths[file], self.tables[file], self.storage_options, self.rank)
            self.stats.check_bytes_read += opened.check_read
            self.stats.bytes_read += opened.check_read

    def close(self) -> None:
        files, self.files = list(self.files.values()), {}
        for f in files:
            f.close()

    def read(self, file: int, offset: int, pieces: Sequence[torch.Tensor]) -> None:
        """Fills ``pieces`` (1-D uint8, contiguous) with consecutive bytes of
        ``file`` from ``offset``."""
        pieces = [p for p in pieces if p.numel()]
        if not pieces:
            return
        if pieces[0].device.type == "cpu":
            self._read_cpu(file, offset, [p.numpy() for p in pieces])
            return
        if self.staging is None:
            self.staging = torch.empty(self.chunk_bytes, dtype=torch.uint8, pin_memory=torch.cuda.is_available())
        for piece in pieces:
            done = 0
            while done < piece.numel():
                n = min(self.chunk_bytes, piece.numel() - done)
                self._read_cpu(file, offset, [self.staging[:n].numpy()])
                piece[done:done + n].copy_(self.staging[:n])
                offset += n
                done += n

    def _read_cpu(self, file: int, offset: int, buffers: list) -> None:
        """Fills CPU ``buffers`` (NumPy views of the tensors: they keep them
        alive) with consecutive bytes of ``file`` from ``offset``."""
        self.files[file].read_into(offset, buffers)
        self.stats.bytes_read += sum(b.nbytes for b in buffers)


# ---------------------------------------------------------------------------
# the load
# ---------------------------------------------------------------------------

def load_distributed(
    source,
    plan: Plan = None,
    *,
    default: Placement = Replicate(),
    group=None,
    device: Union[str, int, torch.device] = "cpu",
    chunk_bytes: int = 64 << 20,
    timeout: Union[None, float, datetime.timedelta] = None,
    stats: Optional[LoadStats] = None,
    storage_options: Optional[dict] = None,
) -> Dict[str, torch.Tensor]:
    """Load a checkpoint into every rank of ``group``; each rank gets its part.

    Collective: every rank of the group must call it with the same arguments.

    ``source``: a ``.safetensors`` path or URL, a list of them, or a
    ``model.safetensors.index.json`` path or URL (its ``weight_map`` names the
    tensors; the files sit next to it).  URLs (``s3://``, ``https://``, any
    fsspec scheme) are read with pinned ranged requests, each byte once
    across the ranks, like local files (``storage_options``: the remote
    filesystem's options, as for ``safe_open``; docs/remote.md).
    ``plan``: ``{name: Replicate() | Shard(dim) | None}`` (``None`` skips the
    tensor; names not in the mapping get ``default``), or a callable
    ``plan(name, shape, dtype) -> placement`` (``shape`` as in the header,
    ``dtype`` the header code such as ``"BF16"``), or ``None`` (``default``
    for every tensor).  ``Shard(dim)`` follows ``torch.tensor_split``.
    ``group``: the process group (default: the world; a group of one when
    ``torch.distributed`` is not initialized).  ``device``: where this rank's
    tensors end up; with an NCCL group and a CUDA device the exchange itself
    happens on the device.  ``chunk_bytes``: bytes each rank reads per round;
    staging memory is about three times this (read, send and receive buffers)
    on top of the outputs.  ``timeout``: seconds (or timedelta) to wait for
    each collective (default: the group's timeout).  ``stats``: a
    ``LoadStats`` to fill with this rank's counters.

    Returns ``{name: tensor}`` in checkpoint order (files in the order given,
    or sorted for an index; tensors in file order).  Replicated tensors are
    views of one buffer per call; shards own their memory.  Any rank's
    failure raises the same exception on every rank.
    """
    started = time.perf_counter()
    stats = stats if stats is not None else LoadStats()
    if not isinstance(chunk_bytes, int) or chunk_bytes < _ALIGN:
        raise ValueError(f"load_distributed: chunk_bytes must be an int of at least {_ALIGN}")
    device = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    pg = _Group(group, device, timeout, stats)
    rank, size = pg.rank, pg.size

    # 1. sources: everyone must name the same files; rank 0 reads the index.
    sources = pg.agree(_resolve_source, source, rank, storage_options)
    kind, paths, wanted = sources[0]
    if kind == "index":
        if any(s[0] != "index" for s in sources):
            raise ValueError("load_distributed: ranks were given different sources (an index on rank 0 only)")
    elif any(s != sources[0] for s in sources):
        raise ValueError("load_distributed: ranks were given different sources; every rank must name the same files")

    # 2. headers: file i is validated by rank i % size.
    def read_headers():
        mine = {}
        for i in range(rank, len(paths), size):
            mine[i] = _read_header(paths[i], storage_options)
            mine[i]["reader"] = rank
            stats.header_bytes_read += mine[i]["header_read"]
            stats.check_bytes_read += mine[i]["check_read"]
            stats.bytes_read += mine[i]["header_read"] + mine[i]["check_read"]
        return mine

    tables: List[dict] = [None] * len(paths)
    for part in pg.agree(read_headers):
        for i, table in part.items():
            tables[i] = table
    tensors = _checkpoint_tensors(paths, tables, wanted)

    # 3. plan, agreed before any data moves.
    reader = _Reader(paths, tables, stats, chunk_bytes, storage_options, rank)
    try:
        state = {}

        def prepare():
            jobs = _make_jobs(tensors, plan, default, size)
            work = _Work(jobs, rank, size, chunk_bytes)
            for file in work.files_to_read():
                reader.open(file)
            state["work"] = work
            return _digest(jobs, chunk_bytes, size)

        digests = pg.agree(prepare)
        if any(d != digests[0] for d in digests):
            odd = [r for r, d in enumerate(digests) if d != digests[0]]
            raise ValueError(
                f"load_distributed: ranks {odd} computed a different load plan than rank 0 "
                "(plan, default or chunk_bytes differ between ranks)"
            )
        result = state["work"].run(pg, reader, device)
    finally:
        reader.close()
    stats.seconds += time.perf_counter() - started
    return result


def _checkpoint_tensors(paths: List[str], tables: List[dict], wanted: Optional[dict]) -> List[tuple]:
    """(name, file, dtype, shape, offset, nbytes) in checkpoint order; for an
    index, only its names, each checked against the file it points to."""
    out, seen = [], {}
    for file, table in enumerate(tables):
        for name, dtype, shape, offset, nbytes in table["tensors"]:
            if wanted is not None and wanted.get(name) != file:
                continue
            if name in seen:
                raise SafetensorError(
                    f"tensor {name!r} is in both {paths[seen[name]]} and {paths[file]}; names must be unique"
                )
            seen[name] = file
            out.append((name, file, dtype, shape, offset, nbytes))
    if wanted is not None:
        absent = sorted(n for n in wanted if n not in seen)
        if absent:
            raise SafetensorError(
                f"the index names tensor {absent[0]!r} in {paths[wanted[absent[0]]]}, which does not contain it"
                + (f" ({len(absent) - 1} more missing)" if len(absent) > 1 else "")
            )
    return out


class _Work:
    """The deterministic schedule every rank derives from the same jobs."""

    def __init__(self, jobs: List[_Job], rank: int, size: int, chunk_bytes: int):
        self.jobs, self.rank, self.size, self.chunk = jobs, rank, size, chunk_bytes
        self.direct = [j for j in jobs if j.kind == "direct"]
        self.replicated = [j for j in jobs if j.kind == "replicate"]
        self.exchanged = [j for j in jobs if j.kind == "exchange"]
        # Replicated: aligned positions in one buffer, cut into rounds of
        # `size` equal slots.
        pos = 0
        for j in self.replicated:
            j.pos = pos
            pos = -(-(pos + j.nbytes) // _ALIGN) * _ALIGN
        self.rep_regions, base = [], 0
        while base < pos:
            slot = -(-min(size * chunk_bytes, pos - base) // size)
            self.rep_regions.append((base, slot))
            base += size * slot
        self.rep_bytes = base
        # Exchanged: slots of whole rows ([B, C] slabs) of about chunk_bytes,
        # or less so that every rank gets a share; round k gives slot
        # k * size + r to rank r.
        total = sum(j.nbytes for j in self.exchanged)
        target = max(min(chunk_bytes, -(-total // size)), 1)
        self.slots: List[List[tuple]] = []
        current, used = [], 0
        for j in self.exchanged:
            slab, a = j.B * j.C, 0
            while a < j.A:
                take = min(j.A - a, (target - used) // slab)
                if take == 0 and used == 0:
                    take = 1                       # a slab larger than a slot goes alone
                if take:
                    current.append((j, a, a + take))
                    used += take * slab
                    a += take
                if take == 0 or used >= target:
                    self.slots.append(current)
                    current, used = [], 0
        if current:
            self.slots.append(current)

    def files_to_read(self) -> List[int]:
        files = {j.file for j in self.direct if j.part(self.rank)}
        for base, slot in self.rep_regions:
            files.update(f for f, _, _, _ in self._rep_pieces(base + self.rank * slot, slot))
        for k in range(self.rank, len(self.slots), self.size):
            files.update(j.file for j, _, _ in self.slots[k])
        return sorted(files)

    def _rep_pieces(self, lo: int, length: int):
        """(file, file offset, buffer start, length) of replicated bytes in
        buffer range [lo, lo + length)."""
        hi = lo + length
        starts = [j.pos for j in self.replicated]
        i = max(bisect_right(starts, lo) - 1, 0)
        pieces = []
        while i < len(self.replicated) and self.replicated[i].pos < hi:
            j = self.replicated[i]
            a, b = max(lo, j.pos), min(hi, j.pos + j.nbytes)
            if a < b:
                pieces.append((j.file, j.offset + a - j.pos, a, b - a))
            i += 1
        return pieces

    def run(self, pg: _Group, reader: _Reader, device: torch.device) -> Dict[str, torch.Tensor]:
        rank, size, xdev = self.rank, self.size, pg.xdev
        stats = pg.stats
        outputs: Dict[str, torch.Tensor] = {}
        rep_buf = rep_bytes = None
        error: Optional[BaseException] = None
        # Allocation and local reads may fail on one rank only (memory, I/O):
        # the failure is held and reported at the next collective check.
        try:
            for j in self.direct + self.exchanged:
                outputs[j.name] = torch.empty(_part_bytes(j, rank), dtype=torch.uint8, device=xdev)
            if xdev.type == "cpu" and self.rep_bytes:
                # Anonymous memory with the buffer protocol, so that each
                # replicated tensor can get its own storage over it without a
                # copy (torch.frombuffer of a slice keeps the mapping alive).
                rep_bytes = mmap.mmap(-1, self.rep_bytes)
                rep_buf = torch.frombuffer(rep_bytes, dtype=torch.uint8)
            else:
                rep_buf = torch.empty(self.rep_bytes, dtype=torch.uint8, device=xdev)
            # Shards with long runs: each owner reads its own runs.
            for j in self.direct:
                part = j.part(rank)
                if not part:
                    continue
                run = part * j.C
                out = outputs[j.name]
                start = j.offset + j.bounds[rank] * j.C
                for a in range(j.A):
                    reader.read(j.file, start + a * j.B * j.C, [out[a * run:(a + 1) * run]])
        except Exception as exc:
            error = exc

        # Replicated: read my slot, then all-gather the region in place.
        for base, slot in self.rep_regions:
            lo = base + rank * slot
            if error is None:
                try:
                    self._read_grouped(reader, [(f, o, rep_buf[b:b + n]) for f, o, b, n in self._rep_pieces(lo, slot)])
                except Exception as exc:
                    error = exc
            pg.check_reads(error)
            if size > 1:
                pg.all_gather(rep_buf[base:base + size * slot], rep_buf[lo:lo + slot])
                stats.bytes_sent += (size - 1) * slot
                stats.bytes_received += (size - 1) * slot
            stats.rounds += 1

        # Short-run shards: read whole rows, pack per destination, all-to-all.
        if self.slots:
            self._exchange(pg, reader, outputs, error)
        else:
            pg.check_reads(error)

        result: Dict[str, torch.Tensor] = {}
        for j in self.jobs:
            if j.kind != "replicate":
                raw = outputs.pop(j.name)
            elif rep_bytes is not None and j.nbytes:
                raw = torch.frombuffer(memoryview(rep_bytes)[j.pos:j.pos + j.nbytes], dtype=torch.uint8)
            else:
                raw = rep_buf[j.pos:j.pos + j.nbytes]
            t = raw.view(_DTYPES[j.dtype][2]).view(_out_shape(j, rank))
            if sys.byteorder != "little":
                # safetensors.torch's byte swap (imported here: it re-exports this module).
                from safetensors.torch import _byteswapped

                t = _byteswapped(t)
            if t.device != device:
                t = t.to(device)
            result[j.name] = t
        return result

    def _read_grouped(self, reader: _Reader, pieces: List[tuple]) -> None:
        """Reads (file, offset, destination) pieces, one call per run of
        pieces that are consecutive in their file."""
        i = 0
        while i < len(pieces):
            file, offset, dst = pieces[i]
            group, end = [dst], offset + dst.numel()
            i += 1
            while i < len(pieces) and pieces[i][0] == file and pieces[i][1] == end:
                group.append(pieces[i][2])
                end += pieces[i][2].numel()
                i += 1
            reader.read(file, offset, group)

    def _exchange(self, pg: _Group, reader: _Reader, outputs, error) -> None:
        rank, size, xdev, stats = self.rank, self.size, pg.xdev, pg.stats

        def owned(slot, q):
            return sum((a1 - a0) * j.part(q) * j.C for j, a0, a1 in slot)

        rounds = -(-len(self.slots) // size)
        slot_of = lambda k, r: self.slots[k * size + r] if k * size + r < len(self.slots) else []  # noqa: E731
        read_cap = max(sum((a1 - a0) * j.B * j.C for j, a0, a1 in s) for s in self.slots)
        recv_cap = max(
            sum(owned(slot_of(k, r), rank) for r in range(size) if r != rank) for k in range(rounds)
        )
        send_cap = max(
            sum((a1 - a0) * j.B * j.C for j, a0, a1 in slot_of(k, rank)) - owned(slot_of(k, rank), rank)
            for k in range(rounds)
        )
        try:
            read_buf = torch.empty(read_cap, dtype=torch.uint8, device=xdev)
            send_buf = torch.empty(send_cap, dtype=torch.uint8, device=xdev)
            recv_buf = torch.empty(recv_cap, dtype=torch.uint8, device=xdev)
        except Exception as exc:   # reported by the first round's check
            error = error or exc
        for k in range(rounds):
            mine = slot_of(k, rank)
            if error is None:
                try:
                    pieces, at = [], 0
                    for j, a0, a1 in mine:
                        n = (a1 - a0) * j.B * j.C
                        pieces.append((j.file, j.offset + a0 * j.B * j.C, read_buf[at:at + n]))
                        at += n
                    self._read_grouped(reader, pieces)
                except Exception as exc:
                    error = exc
            pg.check_reads(error)
            # Pack: per destination, the rows' [bounds[q]:bounds[q+1]] columns.
            send_splits, at = [], 0
            for q in range(size):
                start, pos = at, 0
                for j, a0, a1 in mine:
                    rows = read_buf[pos:pos + (a1 - a0) * j.B * j.C].view(a1 - a0, j.B, j.C)
                    pos += (a1 - a0) * j.B * j.C
                    if not j.part(q):
                        continue
                    cols = rows[:, j.bounds[q]:j.bounds[q + 1], :]
                    if q == rank:
                        outputs[j.name].view(j.A, j.part(q), j.C)[a0:a1].copy_(cols)
                        continue
                    n = (a1 - a0) * j.part(q) * j.C
                    send_buf[at:at + n].view(a1 - a0, j.part(q), j.C).copy_(cols)
                    at += n
                send_splits.append(at - start)
            recv_splits = [0 if r == rank else owned(slot_of(k, r), rank) for r in range(size)]
            if size > 1:
                pg.all_to_all(recv_buf[:sum(recv_splits)], send_buf[:at], recv_splits, send_splits)
                stats.bytes_sent += at
                stats.bytes_received += sum(recv_splits)
            stats.rounds += 1
            # Unpack what the other ranks read for me.
            pos = 0
            for r in range(size):
                if r == rank:
                    continue
                for j, a0, a1 in slot_of(k, r):
                    mine_part = j.part(rank)
                    if not mine_part:
                        continue
                    n = (a1 - a0) * mine_part * j.C
                    outputs[j.name].view(j.A, mine_part, j.C)[a0:a1].copy_(
                        recv_buf[pos:pos + n].view(a1 - a0, mine_part, j.C))
                    pos += n


def _part_bytes(job: _Job, rank: int) -> int:
    return job.A * job.part(rank) * job.C
