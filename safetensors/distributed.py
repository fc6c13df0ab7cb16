"""``load_distributed`` (re-exported by ``safetensors.torch``): a checkpoint
loaded into every rank of a process group, each rank handed its part
(docs/distributed.md): each byte read once and the parts exchanged, or, on
one host from local files, each rank reading its own parts.  Every step runs
on every rank, so collectives line up; one that can fail on one rank is
followed by an agreement."""

import datetime
import hashlib
import math
import mmap
import os
import pickle
import socket
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist

from safetensors import SafetensorError, _safetensors_c, safe_open
from safetensors import remote as _remote
from safetensors._index import resolve
from safetensors.plans import Placement, Plan, Replicate, Shard, placements, shard_bounds
from safetensors._torch_types import PACK, SIZE, TYPES, byteswapped, storage_shape

__all__ = ["LoadStats", "Replicate", "Shard", "load_distributed"]

# Shards made of runs this long are read by their owner (the pages two ranks
# share at run edges are under 1% of that); shorter runs as rows, exchanged.
_DIRECT_RUN = 1 << 20
_ALIGN = 64   # of each replicated tensor in the gathered buffer: dtype views, GPU kernels
# A local file's copy digest: its header and _SAMPLES blocks of _SAMPLE data bytes.
_SAMPLE, _SAMPLES = 64 << 10, 9
_STRATEGIES = ("auto", "direct", "exchange")
# torch 2.13 renamed all_gather_into_tensor (deprecated since, with a warning per call)
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_INLINE = 4096   # bytes per rank of an object gather's first (often only) all-gather (at least 9)




@dataclass
class LoadStats:
    """Counters of one rank, added to by each ``load_distributed`` call it is
    passed to (docs/distributed.md).  ``bytes_read``: tensor data, the headers
    this rank validated (``header_bytes_read``) and the bytes read to check its
    copies of local files (``check_bytes_read``).  ``bytes_sent``,
    ``bytes_received``: tensor payload exchanged (padding included).
    ``rounds``: data exchanges; ``seconds``: wall time.  ``strategy``
    ("direct" or "exchange") and ``strategy_reason``: the last call's."""

    bytes_read: int = 0
    header_bytes_read: int = 0
    check_bytes_read: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    collectives: int = 0
    rounds: int = 0
    seconds: float = 0.0
    strategy: str = ""
    strategy_reason: str = ""


class _Group:
    """The process group, the device tensors are exchanged on (``xdev``) and
    the timeout; a group of one when torch.distributed is not initialized."""

    def __init__(self, group, device: torch.device, timeout, stats: LoadStats):
        self.stats = stats
        if not isinstance(timeout, datetime.timedelta):   # 0: the group's own timeout
            timeout = datetime.timedelta(seconds=float(timeout or 0))
        self.timeout = timeout
        self.group, self.rank, self.size, self.xdev = None, 0, 1, torch.device("cpu")
        if group is None and not (dist.is_available() and dist.is_initialized()):
            return
        self.group, self.rank, self.size = group, dist.get_rank(group), dist.get_world_size(group)
        if self.rank < 0:
            raise ValueError("load_distributed: this process is not a member of the given process group")
        backend = str(dist.get_backend(group)).lower()
        if device.type != "cpu" and any(name in backend for name in ("nccl", "xccl", "hccl")):
            self.xdev = device   # exchange on the device
        elif not any(name in backend for name in ("gloo", "mpi")):
            raise ValueError(f"load_distributed: the process group's backend ({backend}) cannot exchange tensors on "
                             f"{device}; use device='cuda:<local rank>' with NCCL, or a gloo group for CPU")

    def wait(self, work) -> None:
        self.stats.collectives += 1
        work.wait(self.timeout)

    def all_gather(self, out: torch.Tensor, mine: torch.Tensor) -> None:
        self.wait(_all_gather_single(out, mine, group=self.group, async_op=True))

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj`` (pickled: the ranks of a job trust each other,
        as torch's own object collectives do).  One all-gather of _INLINE
        bytes per rank (the pickle's length, then its start); a second one
        only for the rest of pickles longer than that."""
        if self.size == 1:
            return [obj]
        payload, inline = pickle.dumps(obj), _INLINE - 8
        heads = self._all_gather_bytes(len(payload).to_bytes(8, "little") + payload[:inline], _INLINE)
        sizes = [int.from_bytes(h[:8].tobytes(), "little") for h in heads]
        pickles = [h[8:8 + n].tobytes() for h, n in zip(heads, sizes)]
        width = max(sizes) - inline
        if width > 0:
            tails = self._all_gather_bytes(payload[inline:], width)
            pickles = [p + t[:max(n - inline, 0)].tobytes() for p, t, n in zip(pickles, tails, sizes)]
        return [pickle.loads(p) for p in pickles]

    def _all_gather_bytes(self, data: bytes, width: int):
        """Every rank's ``data`` (at most ``width`` bytes, zero-padded): a NumPy array of ``size`` rows."""
        mine = torch.zeros(width, dtype=torch.uint8)
        if data:
            mine[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        everyone = torch.empty(width * self.size, dtype=torch.uint8, device=self.xdev)
        self.all_gather(everyone, mine.to(self.xdev))
        return everyone.cpu().numpy().reshape(self.size, width)

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
        """Collective (one integer, then the errors if any): raises on every
        rank if any rank's reads failed."""
        failed = torch.tensor([int(error is not None)], dtype=torch.int32, device=self.xdev)
        if self.size > 1:
            self.wait(dist.all_reduce(failed, op=dist.ReduceOp.MAX, group=self.group, async_op=True))
        if failed.item():
            _raise_if_failed(self.gather_objects(_portable(error)), error, self.rank)


def _portable(error: Optional[BaseException]):
    """``error`` if it survives pickling, else a RuntimeError with its text."""
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


def _resolve_source(source, rank: int, storage_options: Optional[dict] = None):
    """-> ``("files", [paths or URLs], None)``, or for an index or a folder
    ``("index", [paths or URLs], {name: file index} or None)``, but
    ``("index", None, None)`` on ranks other than 0 for an index URL (fetched
    once) (safetensors._index.resolve's rules)."""
    if isinstance(source, (str, os.PathLike)):
        path = _remote.local_path(os.fspath(source))
        if not (path.split("?", 1)[0].endswith(".json") or (not _remote.is_remote(path) and os.path.isdir(path))):
            return ("files", [path], None)
        if rank != 0 and _remote.is_remote(path):
            return ("index", None, None)
        files, weight_map, _, _ = resolve(path, storage_options)
        position = {f: i for i, f in enumerate(files)}
        return ("index", files, None if weight_map is None else {k: position[v] for k, v in weight_map.items()})
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        paths = [_remote.local_path(os.fspath(s)) for s in source]
        if len(set(paths)) != len(paths):
            raise ValueError("load_distributed: the same file is listed twice")
        return ("files", paths, None)
    raise TypeError("load_distributed: source must be a path or URL, a list of them, a checkpoint folder, "
                    f"or a model.safetensors.index.json path or URL, not {type(source).__name__}")


class _File:
    """A checkpoint file opened for reading, the one place that picks how: a
    local file through its C handle (``safe_open(..., backend="pread")``,
    which validates the header; ``identity``: the copy digest), a URL through
    a byte source (``identity``: the pinned ETag/version): the C handle's
    ``_source`` when this rank reads the header or takes tensors through the
    handle (``slices``: the direct strategy), else ``remote.open_source``.
    Without ``table`` the header is read (``tensors``: ``_table()`` rows);
    with it, this copy must be the header reader's.  ``pages()``: a handle
    whose slices are views of the file's pages (the direct strategy's short
    strided parts)."""

    def __init__(self, path: str, table: Optional[dict] = None, storage_options: Optional[dict] = None,
                 rank: int = 0, slices: bool = False):
        self.handle, self.source, self.header_read, self.check_read = None, None, 0, 0   # bytes read
        self.path, self.mapped = path, None
        if _remote.is_remote(path) and table is not None and not slices:
            self.source = _remote.open_source(path, storage_options, head_bytes=8)
        elif _remote.is_remote(path):   # the length prefix, then exactly the header: no tensor byte twice
            self.handle = safe_open(path, "pt", backend="pread", storage_options=storage_options, head_bytes=8)
            self.source = self.handle._source
        else:
            stat = os.stat(path)
            self.size = stat.st_size
            self.handle = safe_open(path, "pt", backend="pread")
        if self.source is not None:
            self.size, self.identity = self.source.size, self.source.identity
        try:
            if self.handle is not None:
                self.tensors = self.handle._table()
                self.header_read = self.tensors[0][3] if self.tensors else self.size   # where the data starts
            if self.source is None:
                self.identity, self.check_read = self.digest()
                now = os.stat(path)
                if (now.st_ino, now.st_size, now.st_mtime_ns) != (stat.st_ino, stat.st_size, stat.st_mtime_ns):
                    raise SafetensorError(f"{path}: the file changed while its header was being read")
            if table is not None and (self.size, self.identity) != (table["size"], table["identity"]):
                differs = (f"{self.size} bytes against {table['size']}" if self.size != table["size"] else
                           "same size, but the header or sampled data differ" if self.source is None else
                           f"ETag/version {self.identity} against {table['identity']}: replaced during the load")
                raise SafetensorError(
                    f"{path}: rank {rank}'s copy differs from the copy rank {table['reader']} read its header from "
                    f"({differs}): every rank must see the same file (node-local copies must be identical), "
                    "unchanged during the load")
        except BaseException:
            self.close()
            raise

    def digest(self) -> Tuple[str, int]:
        """(SHA-256 hex, bytes read) of the header bytes and of _SAMPLES blocks
        of the data section, evenly spaced from the first to the last (all of
        it when smaller): copies compared without reading them whole."""
        start, data = self.header_read, self.size - self.header_read
        spans = [(0, start)]
        if data <= _SAMPLES * _SAMPLE:
            spans.append((start, data))
        else:
            spans += [(start + (data - _SAMPLE) * k // (_SAMPLES - 1), _SAMPLE) for k in range(_SAMPLES)]
        sha = hashlib.sha256()
        for offset, length in spans:
            block = bytearray(length)
            self.handle._read_into(offset, block)
            sha.update(block)
        return sha.hexdigest(), sum(length for _, length in spans)

    def read_into(self, offset: int, buffers: Sequence) -> None:
        """Fills ``buffers`` (writable, contiguous) with consecutive bytes from ``offset``."""
        requests = []
        for buffer in buffers:
            requests.append((offset, memoryview(buffer).cast("B")))
            offset += requests[-1][1].nbytes
        if self.source is not None:
            self.source.read_many(requests)   # one call: consecutive ranges go in one request
            return
        for at, view in requests:
            self.handle._read_into(at, view)

    def pages(self):
        """A local file's mmap handle (opened on first use: its slices are
        views of the cached pages), or a URL's own handle."""
        if self.source is not None:
            return self.handle
        if self.mapped is None:
            self.mapped = safe_open(self.path, "pt")
        return self.mapped

    def close(self) -> None:
        if self.mapped is not None:
            self.mapped.close()
        (self.handle if self.handle is not None else self.source).close()   # a handle closes its source


class _Job:
    """One tensor to load: ``kind`` "replicate", "direct" (a shard its owner
    reads into its output) or "exchange".  Its bytes are viewed as ``[A, B,
    C]``: ``B`` the sharded dimension (1 if replicated), ``A`` the product of
    the dimensions before it, ``C`` the bytes of one index of ``B``; rank
    ``q`` owns ``B`` indices ``bounds[q]:bounds[q + 1]``, which are
    ``cuts[q]:cuts[q + 1]`` in the header's units (values: they differ for
    packed dtypes), the selection ``index(q)`` of the direct strategy."""

    def __init__(self, name: str, file: int, dtype: str, shape: tuple, offset: int, nbytes: int, placement,
                 size: int):
        self.name, self.file, self.dtype, self.offset, self.nbytes = name, file, dtype, offset, nbytes
        self.torch_dtype = TYPES.get(dtype)
        if self.torch_dtype is None:
            raise TypeError(f"tensor {name!r} has dtype {dtype}, which this torch build cannot represent")
        self.storage = tuple(storage_shape(dtype, shape, f"{dtype} tensor {name!r}"))
        if isinstance(placement, Replicate):
            self.kind, self.dim, self.A, self.B, self.C, self.bounds = "replicate", None, 1, 1, nbytes, [0] + [1] * size
            self.cuts = None
            return
        ndim, dim, pack = len(shape), placement.dim, PACK[dtype]
        if not isinstance(dim, int) or ndim == 0 or not -ndim <= dim < ndim:
            raise ValueError(f"cannot shard tensor {name!r} of shape {list(shape)} along dim {dim}")
        dim %= ndim
        bounds = self.cuts = shard_bounds(shape[dim], size)
        if dim == ndim - 1 and pack > 1:
            if any(b % pack for b in bounds):
                raise ValueError(
                    f"cannot shard {dtype} tensor {name!r} of shape {list(shape)} along its last dim into "
                    f"{size} parts: {self.torch_dtype} packs {pack} values per element and the parts would not "
                    "start on whole elements")
            bounds = [b // pack for b in bounds]
        self.dim, self.bounds = dim, bounds
        self.A, self.B = math.prod(self.storage[:dim]), self.storage[dim]
        self.C = math.prod(self.storage[dim + 1:]) * SIZE[self.torch_dtype]
        runs = [self.part(q) * self.C for q in range(size) if self.part(q)]
        self.kind = "direct" if self.A == 1 or not runs or min(runs) >= _DIRECT_RUN else "exchange"

    def part(self, q: int) -> int:
        return self.bounds[q + 1] - self.bounds[q]

    def pieces(self, q: int, out: torch.Tensor) -> List[tuple]:
        """(file, offset, destination) of rank ``q``'s part read into ``out``
        (1-D uint8): its ``A`` runs, or the whole tensor for a replicated one."""
        if self.dim is None:
            return [(self.file, self.offset, out)]
        run, start = self.part(q) * self.C, self.offset + self.bounds[q] * self.C
        return [(self.file, start + a * self.B * self.C, out[a * run:(a + 1) * run]) for a in range(self.A)]

    def tensor(self, raw: torch.Tensor, q: int) -> torch.Tensor:
        """Rank ``q``'s part from its bytes ``raw``."""
        t = raw.view(self.torch_dtype).view(self.shape(q))
        return byteswapped(t) if sys.byteorder != "little" else t

    def index(self, q: int) -> tuple:
        """``get_slice``'s selection of rank ``q``'s part."""
        return (slice(None),) * self.dim + (slice(self.cuts[q], self.cuts[q + 1]),)

    def shape(self, q: int) -> tuple:
        """The torch shape of rank ``q``'s part."""
        if self.dim is None:
            return self.storage
        return self.storage[:self.dim] + (self.part(q),) + self.storage[self.dim + 1:]


def _make_jobs(paths: List[str], tables: List[dict], wanted: Optional[dict], plan, default, size: int) -> List[_Job]:
    """The jobs of a load in checkpoint order; for an index, only its names,
    each checked against the file it points to.  Raises for a plan that
    names unknown tensors or cannot apply."""
    tensors, seen = [], {}
    for file, table in enumerate(tables):
        for name, dtype, shape, begin, end in table["tensors"]:
            if wanted is not None and wanted.get(name) != file:
                continue
            if name in seen:
                raise SafetensorError(
                    f"tensor {name!r} is in both {paths[seen[name]]} and {paths[file]}; names must be unique")
            seen[name] = file
            tensors.append((name, file, dtype, tuple(shape), begin, end - begin))
    absent = sorted(n for n in wanted or () if n not in seen)
    if absent:
        raise SafetensorError(
            f"the index names tensor {absent[0]!r} in {paths[wanted[absent[0]]]}, which does not contain it"
            + (f" ({len(absent) - 1} more missing)" if len(absent) > 1 else ""))
    placed = placements(plan, ((t[0], t[3], t[2]) for t in tensors), default, "load_distributed")
    return [_Job(name, file, dtype, shape, offset, nbytes, placed[name], size)
            for name, file, dtype, shape, offset, nbytes in tensors if name in placed]


class _Work:
    """The deterministic schedule every rank derives from the same jobs, and
    this rank's part of it: its files, its reads (counted; device tensors
    filled through a host staging buffer of ``chunk_bytes``, pinned when CUDA
    is there) and its exchanges."""

    def __init__(self, jobs: List[_Job], rank: int, size: int, chunk_bytes: int, stats: LoadStats):
        self.jobs, self.rank, self.size, self.chunk_bytes, self.stats = jobs, rank, size, chunk_bytes, stats
        self.files: Dict[int, _File] = {}
        self.staging: Optional[torch.Tensor] = None
        self.direct = [j for j in jobs if j.kind == "direct"]
        self.replicated = [j for j in jobs if j.kind == "replicate"]
        self.exchanged = [j for j in jobs if j.kind == "exchange"]
        # Replicated: aligned positions in one buffer, cut into rounds of `size` equal slots.
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
        # Exchanged: slots of whole rows ([B, C] slabs) of about chunk_bytes, or less so that
        # every rank gets a share; round k gives slot k * size + r to rank r.
        target = max(min(chunk_bytes, -(-sum(j.nbytes for j in self.exchanged) // size)), 1)
        slots: List[List[tuple]] = []
        current, used = [], 0
        for j in self.exchanged:
            slab, a = j.B * j.C, 0
            while a < j.A:
                take = min(j.A - a, (target - used) // slab)
                if take == 0 and used == 0:
                    take = 1                       # a slab larger than a slot goes alone
                if take:
                    current.append((j, a, a + take, used))   # rows a:a + take at byte `used` of the slot
                    used += take * slab
                    a += take
                if take == 0 or used >= target:
                    slots.append(current)
                    current, used = [], 0
        if current:
            slots.append(current)
        slots += [[]] * (-len(slots) % size)
        self.rounds = [slots[k:k + size] for k in range(0, len(slots), size)]
        # The exchange's buffers: a slot of rows; what this rank sends and receives in a round.
        self.caps = (max((_owned(s, None) for s in slots), default=0),
                     max((_owned(r[rank], None) - _owned(r[rank], rank) for r in self.rounds), default=0),
                     max((sum(_owned(s, rank) for q, s in enumerate(r) if q != rank) for r in self.rounds), default=0))

    def open(self, paths: List[str], tables: List[dict], storage_options: Optional[dict]) -> None:
        """Opens the files this rank reads in the exchange, each checked to be
        the header reader's copy."""
        files = {j.file for j in self.direct if j.part(self.rank)}
        for base, slot in self.rep_regions:
            files.update(f for f, _, _, _ in self._rep_pieces(base + self.rank * slot, base + (self.rank + 1) * slot))
        for slots in self.rounds:
            files.update(j.file for j, _, _, _ in slots[self.rank])
        for i in sorted(files):
            self.files[i] = f = _File(paths[i], tables[i], storage_options, self.rank)
            self.stats.check_bytes_read += f.header_read + f.check_read
            self.stats.bytes_read += f.header_read + f.check_read

    def close(self) -> None:
        files, self.files = list(self.files.values()), {}
        for f in files:
            f.close()

    def read(self, pieces: List[tuple]) -> None:
        """Fills the destinations of (file, offset, 1-D uint8 tensor) pieces,
        one read per run of pieces that are consecutive in their file."""
        runs: List[list] = []   # [file, offset, end, destinations]
        for file, offset, dst in pieces:
            if dst.numel() and runs and runs[-1][0] == file and runs[-1][2] == offset:
                runs[-1][2] += dst.numel()
                runs[-1][3].append(dst)
            elif dst.numel():
                runs.append([file, offset, offset + dst.numel(), [dst]])
        for file, offset, _, dsts in runs:
            if dsts[0].device.type == "cpu":
                self._read_cpu(file, offset, [d.numpy() for d in dsts])
                continue
            if self.staging is None:
                self.staging = torch.empty(self.chunk_bytes, dtype=torch.uint8, pin_memory=torch.cuda.is_available())
            for dst in dsts:
                for done in range(0, dst.numel(), self.chunk_bytes):
                    staged = self.staging[:min(self.chunk_bytes, dst.numel() - done)]
                    self._read_cpu(file, offset + done, [staged.numpy()])
                    dst[done:done + staged.numel()].copy_(staged)
                offset += dst.numel()

    def _read_cpu(self, file: int, offset: int, buffers: list) -> None:
        """Fills CPU ``buffers`` (NumPy views of the tensors: they keep them
        alive) with consecutive bytes of ``file`` from ``offset``."""
        self.files[file].read_into(offset, buffers)
        self.stats.bytes_read += sum(b.nbytes for b in buffers)

    def _read_then_check(self, pg: _Group, pieces: Callable, error: Optional[BaseException]) -> None:
        """Reads ``pieces()`` unless this rank already failed, then raises on
        every rank if any rank failed."""
        if error is None:
            try:
                self.read(pieces())
            except Exception as exc:
                error = exc
        pg.check_reads(error)

    def _rep_pieces(self, lo: int, hi: int) -> List[tuple]:
        """(file, file offset, buffer start, end) of the replicated bytes in
        buffer range [lo, hi)."""
        pieces = []
        for j in self.replicated:
            a, b = max(lo, j.pos), min(hi, j.pos + j.nbytes)
            if a < b:
                pieces.append((j.file, j.offset + a - j.pos, a, b))
        return pieces

    def take_all(self, device: torch.device) -> Dict[str, torch.Tensor]:
        """The direct strategy: this rank's parts, through its own handles."""
        result: Dict[str, torch.Tensor] = {}
        for j in self.jobs:
            t = self._take(j)
            result[j.name] = t if t.device == device else t.to(device)
        return result

    def _take(self, j: _Job) -> torch.Tensor:
        """This rank's part of ``j``, a CPU tensor of its own: a part of short
        strided runs (an "exchange" job) through ``get_slice`` of a handle on
        the file's pages, copied once (the rows around it are mapped, not read
        whole first); a whole tensor or a part of long runs read into place,
        as the exchange reads them."""
        if j.kind != "exchange":
            out = torch.empty(j.nbytes if j.dim is None else j.A * j.part(self.rank) * j.C, dtype=torch.uint8)
            self.read(j.pieces(self.rank, out))
            return j.tensor(out, self.rank)
        f = self.files[j.file]
        t = f.pages().get_slice(j.name)[j.index(self.rank)]
        self.stats.bytes_read += t.nbytes
        return t if f.source is not None else t.clone(memory_format=torch.contiguous_format)

    def run(self, pg: _Group, device: torch.device) -> Dict[str, torch.Tensor]:
        rank, size, xdev, stats = self.rank, self.size, pg.xdev, pg.stats
        outputs: Dict[str, torch.Tensor] = {}
        rep_buf = rep_bytes = None
        buffers: List[Optional[torch.Tensor]] = [None] * 3   # the exchange's, once allocated
        error: Optional[BaseException] = None
        # A failure of one rank only (memory, I/O) is held until the next collective check.
        try:
            for j in self.direct + self.exchanged:
                outputs[j.name] = torch.empty(j.A * j.part(rank) * j.C, dtype=torch.uint8, device=xdev)
            if xdev.type == "cpu" and self.rep_bytes:
                # Anonymous memory: each replicated tensor gets a storage of its own over
                # it, without a copy (torch.frombuffer of a slice keeps the mapping alive).
                rep_bytes = mmap.mmap(-1, self.rep_bytes)
                rep_buf = torch.frombuffer(rep_bytes, dtype=torch.uint8)
            else:
                rep_buf = torch.empty(self.rep_bytes, dtype=torch.uint8, device=xdev)
            buffers = [torch.empty(n, dtype=torch.uint8, device=xdev) for n in self.caps]
            for j in self.direct:   # each owner reads its own runs
                self.read(j.pieces(rank, outputs[j.name]))
        except Exception as exc:
            error = exc

        # Replicated: read my slot, then all-gather the region in place.
        for base, slot in self.rep_regions:
            lo = base + rank * slot
            self._read_then_check(pg, lambda: [(f, o, rep_buf[a:b]) for f, o, a, b in self._rep_pieces(lo, lo + slot)],
                                  error)
            if size > 1:
                pg.all_gather(rep_buf[base:base + size * slot], rep_buf[lo:lo + slot])
                stats.bytes_sent += (size - 1) * slot
                stats.bytes_received += (size - 1) * slot
            stats.rounds += 1

        if self.rounds:
            self._exchange(pg, outputs, buffers, error)
        else:
            pg.check_reads(error)   # the direct reads

        result: Dict[str, torch.Tensor] = {}
        for j in self.jobs:
            if j.kind != "replicate":
                raw = outputs.pop(j.name)
            elif rep_bytes is not None and j.nbytes:
                raw = torch.frombuffer(memoryview(rep_bytes)[j.pos:j.pos + j.nbytes], dtype=torch.uint8)
            else:
                raw = rep_buf[j.pos:j.pos + j.nbytes]
            t = j.tensor(raw, rank)
            result[j.name] = t if t.device == device else t.to(device)
        return result

    def _exchange(self, pg: _Group, outputs, buffers: List[torch.Tensor], error) -> None:
        """Short-run shards: each round, every rank reads its slot of whole
        rows, packs each destination's columns and one all-to-all delivers."""
        rank, size, stats = self.rank, self.size, pg.stats
        read_buf, send_buf, recv_buf = buffers
        for slots in self.rounds:
            mine = slots[rank]
            self._read_then_check(pg, lambda: [(j.file, j.offset + a0 * j.B * j.C,
                                                read_buf[p:p + (a1 - a0) * j.B * j.C]) for j, a0, a1, p in mine], error)
            # Pack: per destination, the rows' [bounds[q]:bounds[q+1]] columns.
            send_splits, at = [], 0
            for q in range(size):
                start = at
                for j, a0, a1, p in mine:
                    slab = read_buf[p:p + (a1 - a0) * j.B * j.C].view(a1 - a0, j.B, j.C)
                    cols, n = slab[:, j.bounds[q]:j.bounds[q + 1], :], (a1 - a0) * j.part(q) * j.C
                    if n and q == rank:
                        outputs[j.name].view(j.A, j.part(q), j.C)[a0:a1].copy_(cols)
                    elif n:
                        send_buf[at:at + n].view(a1 - a0, j.part(q), j.C).copy_(cols)
                        at += n
                send_splits.append(at - start)
            recv_splits = [0 if r == rank else _owned(s, rank) for r, s in enumerate(slots)]
            if size > 1:
                pg.wait(dist.all_to_all_single(recv_buf[:sum(recv_splits)], send_buf[:at], recv_splits, send_splits,
                                               group=pg.group, async_op=True))
                stats.bytes_sent += at
                stats.bytes_received += sum(recv_splits)
            stats.rounds += 1
            # Unpack what the other ranks read for me.
            pos = 0
            for j, a0, a1, _ in (piece for r, s in enumerate(slots) if r != rank for piece in s):
                part = j.part(rank)
                n = (a1 - a0) * part * j.C
                outputs[j.name].view(j.A, part, j.C)[a0:a1].copy_(recv_buf[pos:pos + n].view(a1 - a0, part, j.C))
                pos += n


def _whereabouts(paths: List[str]) -> tuple:
    """This rank's facts for the auto strategy: (its host: name and boot id,
    for each source what it lies on: None for a local file system, "url", or
    the name ``_storage_kind`` gives a network or FUSE file system).  Where
    the C module has no ``_storage_kind``, every file system counts as local."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    storage_kind = getattr(_safetensors_c, "_storage_kind", None)
    kinds = []
    for path in paths:
        if _remote.is_remote(path):
            kinds.append("url")
            continue
        try:
            kinds.append(storage_kind(path) if storage_kind is not None else None)
        except Exception as exc:  # a fact, not the load's error: a missing file fails with the headers
            kinds.append(f"unknown ({type(exc).__name__})")
    return (socket.gethostname(), boot), kinds


def _choose(strategy: str, facts: List[tuple], paths: List[str]) -> Tuple[str, str]:
    """(strategy, reason) from every rank's ``_whereabouts``: the same on every rank."""
    if strategy != "auto":
        return strategy, f"strategy={strategy!r} was given"
    hosts = {host for host, _ in facts}
    if len(hosts) > 1:
        return "exchange", f"the {len(facts)} ranks are on {len(hosts)} hosts: each byte is read once"
    for rank, (_, kinds) in enumerate(facts):
        for path, kind in zip(paths, kinds):
            if kind is not None:
                where = "a URL" if kind == "url" else f"on a {kind} file system (as rank {rank} sees it)"
                return "exchange", f"{path} is {where}: each byte is read once"
    return "direct", (f"one host for all {len(facts)} ranks and local files: the page cache shares the bytes, "
                      "each rank reads its own parts")


def _owned(slot: List[tuple], q: Optional[int]) -> int:
    """Bytes of rank ``q``'s columns in the rows of ``slot`` (all columns when ``q`` is None)."""
    return sum((a1 - a0) * (j.B if q is None else j.part(q)) * j.C for j, a0, a1, _ in slot)


def load_distributed(source, plan: Plan = None, *, default: Placement = Replicate(), group=None,
                     device: Union[str, int, torch.device] = "cpu", chunk_bytes: int = 64 << 20,
                     timeout: Union[None, float, datetime.timedelta] = None, stats: Optional[LoadStats] = None,
                     storage_options: Optional[dict] = None, strategy: str = "auto") -> Dict[str, torch.Tensor]:
    """Load a checkpoint into every rank of ``group``; each rank gets its part.

    Collective: every rank of the group must call it with the same arguments
    (docs/distributed.md has the details).  ``source``: a ``.safetensors``
    path or URL, a list of them, or a ``model.safetensors.index.json`` path
    or URL.  ``plan``: ``{name: Replicate() | Shard(dim) | None}`` (``None``
    skips; names left out get ``default``), a callable ``plan(name, shape,
    dtype) -> placement`` (the header's shape and dtype code), or ``None``.
    ``Shard(dim)`` follows ``torch.tensor_split``.  ``group``: default the
    world (a group of one without torch.distributed).  ``device``: where this
    rank's tensors end up.  ``chunk_bytes``: bytes each rank reads per round
    (staging is about three times this).  ``timeout``: seconds or timedelta
    per collective (default: the group's).  ``stats``: a ``LoadStats`` for
    this rank.  ``storage_options``: as for ``safe_open`` (URLs).
    ``strategy``: "exchange" (each byte read by one rank, parts exchanged),
    "direct" (each rank reads its own parts through ``safe_open``) or "auto":
    direct when every rank is on one host and every file on a local file
    system, else exchange (``stats.strategy``, ``stats.strategy_reason``).

    Returns ``{name: tensor}`` in checkpoint order.  Exchanged replicated
    tensors are views of one buffer per call; other tensors own their
    memory.  Any rank's failure raises the same exception on every rank.
    """
    started = time.perf_counter()
    stats = stats if stats is not None else LoadStats()
    if not isinstance(chunk_bytes, int) or chunk_bytes < _ALIGN:
        raise ValueError(f"load_distributed: chunk_bytes must be an int of at least {_ALIGN}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"load_distributed: strategy must be one of {', '.join(_STRATEGIES)}, not {strategy!r}")
    device = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    pg = _Group(group, device, timeout, stats)
    rank = pg.rank

    # 1. sources, and the facts of the "auto" strategy: every rank resolves the
    # source itself (an index URL: rank 0 only) and one all-gather compares them.
    resolved: list = []

    def survey():
        resolved.append(_resolve_source(source, rank, storage_options))
        kind, paths, wanted = resolved[0]
        digest = None if paths is None else hashlib.sha256(repr((paths, wanted)).encode()).hexdigest()
        return kind, digest, strategy, _whereabouts(paths or [])

    surveys = pg.agree(survey)
    if len({kind for kind, _, _, _ in surveys}) > 1 or len({d for _, d, _, _ in surveys if d is not None}) > 1:
        raise ValueError("load_distributed: ranks were given different sources; every rank must name the same files")
    odd = [r for r, (_, _, asked, _) in enumerate(surveys) if asked != surveys[0][2]]
    if odd:
        raise ValueError(f"load_distributed: ranks {odd} computed a different load plan than rank 0 "
                         "(the strategy differs between ranks)")
    _, paths, wanted = resolved[0]
    if any(d is None for _, d, _, _ in surveys):   # an index URL: rank 0's reading of it
        _, paths, wanted = pg.gather_objects(resolved[0])[0]
    strategy, stats.strategy_reason = _choose(strategy, [facts for _, _, _, facts in surveys], paths)
    stats.strategy = strategy
    work: List[_Work] = []
    try:
        if strategy == "direct":
            result = _load_direct(pg, paths, wanted, plan, default, chunk_bytes, storage_options, device, work)
        else:
            result = _load_exchange(pg, paths, wanted, plan, default, chunk_bytes, storage_options, device, work)
    finally:
        for w in work:
            w.close()
    stats.seconds += time.perf_counter() - started
    return result


def _plan_digest(size: int, chunk_bytes: int, strategy: str, jobs: List[_Job]) -> str:
    text = repr((size, chunk_bytes, strategy, [(j.name, j.file, j.kind, j.dim) for j in jobs]))
    return hashlib.sha256(text.encode()).hexdigest()


def _check_plans(digests: List[str]) -> None:
    odd = [r for r, d in enumerate(digests) if d != digests[0]]
    if odd:
        raise ValueError(f"load_distributed: ranks {odd} computed a different load plan than rank 0 "
                         "(plan, default, chunk_bytes or strategy differ between ranks)")


def _load_direct(pg: _Group, paths, wanted, plan, default, chunk_bytes, storage_options, device, work) -> dict:
    """Each rank reads every header and its own parts through its own handles;
    one all-gather then agrees on the outcome, the copies and the plan."""
    rank, size, stats = pg.rank, pg.size, pg.stats
    taken: Dict[str, torch.Tensor] = {}

    def load_here():
        files: Dict[int, _File] = {}
        try:
            for i, path in enumerate(paths):
                files[i] = f = _File(path, None, storage_options, rank, slices=True)
                stats.header_bytes_read += f.header_read
                stats.check_bytes_read += f.check_read
                stats.bytes_read += f.header_read + f.check_read
            tables = [{"size": f.size, "identity": f.identity, "tensors": f.tensors, "reader": rank}
                      for f in files.values()]
            jobs = _make_jobs(paths, tables, wanted, plan, default, size)
            work.append(_Work(jobs, rank, size, chunk_bytes, stats))
        finally:
            if work:
                work[0].files = files
            else:
                for f in files.values():
                    f.close()
        taken.update(work[0].take_all(device))
        return _plan_digest(size, chunk_bytes, "direct", jobs), [(t["size"], t["identity"]) for t in tables]

    outcomes = pg.agree(load_here)
    for i, path in enumerate(paths):   # rank 0's copies are the reference
        size0, id0 = outcomes[0][1][i]
        for r, (_, copies) in enumerate(outcomes):
            if copies[i] != (size0, id0):
                differs = (f"{copies[i][0]} bytes against {size0}" if copies[i][0] != size0 else
                           "same size, but the header or sampled data differ" if not _remote.is_remote(path) else
                           f"ETag/version {copies[i][1]} against {id0}: replaced during the load")
                raise SafetensorError(
                    f"{path}: rank {r}'s copy differs from the copy rank 0 read its header from "
                    f"({differs}): every rank must see the same file (node-local copies must be identical), "
                    "unchanged during the load")
    _check_plans([digest for digest, _ in outcomes])
    return taken


def _load_exchange(pg: _Group, paths, wanted, plan, default, chunk_bytes, storage_options, device, work) -> dict:
    """Rank ``i % size`` validates file ``i``'s header and the tables are
    shared; the plan is agreed before any data moves; each byte is read once."""
    rank, size, stats = pg.rank, pg.size, pg.stats

    def read_headers():
        mine = {}
        for i in range(rank, len(paths), size):
            f = _File(paths[i], None, storage_options)
            f.close()
            mine[i] = {"size": f.size, "identity": f.identity, "tensors": f.tensors, "reader": rank}
            stats.header_bytes_read += f.header_read
            stats.check_bytes_read += f.check_read
            stats.bytes_read += f.header_read + f.check_read
        return mine

    parts = pg.agree(read_headers)
    tables = [parts[i % size][i] for i in range(len(paths))]

    def prepare():
        jobs = _make_jobs(paths, tables, wanted, plan, default, size)
        work.append(_Work(jobs, rank, size, chunk_bytes, stats))
        work[0].open(paths, tables, storage_options)
        return _plan_digest(size, chunk_bytes, "exchange", jobs)

    _check_plans(pg.agree(prepare))
    return work[0].run(pg, device)
