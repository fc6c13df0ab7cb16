"""``prefetch(plan)`` of a handle or a checkpoint: what the plan names is read in
the background, in file order, through the handles' one read path
(``_read_tensors``: one parallel read per batch, into the final tensors;
``_slice``: a Shard's part), at most ``budget`` bytes ahead of what the caller
has taken (docs/checkpoints.md). Whole tensors of a mapped file mostly in the
page cache are not read ahead: get_tensor's views of it cost no read.

One reader thread per prefetch. A tensor is QUEUED, then READING (the thread
has it), DONE (read, or failed: ``error``) and TAKEN (handed out, or claimed by
the caller before the thread reached it: the caller then reads it itself, so
it never waits for tensors other than its own). The thread refers to the
handles weakly: a handle dropped without close cancels the prefetch. Its
destinations are referenced by the thread itself until its read returns, so
they outlive a caller that is interrupted or closes the handle meanwhile.
"""
import threading
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._safetensors_c import SafetensorError, _prefers_pread
from .plans import Plan, Replicate, Shard, placements, shard_bounds

__all__ = ["Prefetch", "DEFAULT_BUDGET"]

DEFAULT_BUDGET = 1 << 30
# Bytes per read call at most: large enough that the core's read threads all have chunks,
# small enough that the first tensors arrive early.
_BATCH = 256 << 20
QUEUED, READING, DONE, TAKEN = range(4)


class _Job:
    __slots__ = ("name", "file", "nbytes", "index", "state", "result", "error")

    def __init__(self, name: str, file: int, nbytes: int, index: Optional[tuple]):
        self.name, self.file, self.nbytes, self.index = name, file, nbytes, index
        self.state, self.result, self.error = QUEUED, None, None


class Prefetch:
    """The background reader of one ``prefetch(plan)`` over ``handles`` (one
    file's handle, or a checkpoint's, in file order); ``tables[i]``: the
    ``_table()`` rows of ``handles[i]`` that are visible."""

    def __init__(self, handles: Sequence[Any], tables: Sequence[List[tuple]], plan: Plan = None, *,
                 budget: Optional[int] = None, rank: int = 0, world_size: int = 1):
        if budget is None:
            budget = DEFAULT_BUDGET
        for arg, value, least in (("budget", budget, 1), ("world_size", world_size, 1), ("rank", rank, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"prefetch: {arg} must be an int of at least {least}, not {value!r}")
        if rank >= world_size:
            raise ValueError(f"prefetch: rank {rank} is not below world_size {world_size}")
        # A mapped file mostly in the page cache is left to get_tensor's views (instant); the
        # whole-file load's rule (the core's) says when it is not.
        copied = [(resident := h._resident()) is None or _prefers_pread(resident, sum(r[4] - r[3] for r in t))
                  for h, t in zip(handles, tables)]
        rows = [(row, i) for i, table in enumerate(tables) for row in table]
        chosen = placements(plan, ((r[0], r[2], r[1]) for r, _ in rows), None if plan is not None else Replicate(),
                            "prefetch")
        self._jobs: Dict[str, _Job] = {}
        for (name, dtype, shape, begin, end), file in rows:
            placement = chosen.get(name)
            if placement is None:
                continue
            index = None if isinstance(placement, Replicate) else _part(name, shape, placement, rank, world_size)
            if index is None and not copied[file]:
                continue
            nbytes = end - begin
            if index is not None and shape:
                nbytes = nbytes * len(range(*index[-1].indices(shape[len(index) - 1]))) // max(shape[len(index) - 1], 1)
            self._jobs[name] = _Job(name, file, nbytes, index)
        self._order = list(self._jobs.values())   # file order
        self._budget, self._held, self._cancelled, self._cursor = budget, 0, False, 0
        self._cond = threading.Condition()
        cancel = self.cancel
        self._handles = [weakref.ref(h, lambda _, cancel=cancel: cancel()) for h in handles]
        self._thread = threading.Thread(target=self._run, name="safetensors-prefetch", daemon=True)
        self._thread.start()

    # -- the caller's side --

    def take(self, name: str) -> Any:
        """The tensor read for ``name`` (waiting while it is being read); if the
        thread has not reached it, read now by the caller with the same
        parallel reads (a view of a cold file would be read by page faults,
        one readahead window at a time: a quarter slower for the 2 GB
        checkpoint read in sorted-name order), and skipped by the thread. None
        when the plan does not name it whole or it was taken."""
        with self._cond:
            job = self._jobs.get(name)
            if job is None or job.index is not None:
                return None
            if job.state != QUEUED:
                return self._take(job)
            job.state = TAKEN   # not reached: the caller reads it now, as the thread would
            handle = self._handles[job.file]()
        return None if handle is None else handle._read_tensors([name])[name]

    def slice(self, name: str) -> Any:
        """What ``get_slice(name)`` returns for a tensor planned as a Shard: a
        slice whose ``[part]`` is the part read; None for any other tensor."""
        with self._cond:
            job = self._jobs.get(name)
            if job is None or job.index is None or job.state == TAKEN:
                return None
        return _PlannedSlice(self, job, self._handles[job.file]())

    def files(self) -> set:
        """The positions (in ``handles``) of the files it reads from."""
        return {job.file for job in self._order}

    def cancel(self) -> None:
        """Stops reading after the read in flight (safe from any thread)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def close(self) -> None:
        """cancel(), wait for the thread, and free what was not taken."""
        self.cancel()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._cond:
            for job in self._order:
                job.result = job.error = None
            self._held = 0

    def _take(self, job: _Job) -> Any:   # lock held
        if job.state == QUEUED:
            job.state = TAKEN
            return None
        while job.state == READING:
            self._cond.wait()
        if job.state != DONE:
            return None
        result, error = job.result, job.error
        job.state, job.result, job.error = TAKEN, None, None
        self._held -= job.nbytes
        self._cond.notify_all()
        if error is not None:
            raise SafetensorError(f"Error while prefetching tensor {job.name}: {error}") from error
        return result

    # -- the reader thread --

    def _batch(self) -> List[_Job]:   # lock held: the next jobs to read, [] when done
        while True:
            while self._cursor < len(self._order) and self._order[self._cursor].state != QUEUED:
                self._cursor += 1
            if self._cancelled or self._cursor == len(self._order):
                return []
            first = self._order[self._cursor]
            if self._held == 0 or self._held + first.nbytes <= self._budget:
                break
            self._cond.wait()
        batch, total = [first], first.nbytes
        room = min(_BATCH, max(self._budget - self._held, first.nbytes))
        for job in self._order[self._cursor + 1:]:
            if job.state != QUEUED:   # the caller took it
                continue
            if first.index is not None or job.index is not None or job.file != first.file or total + job.nbytes > room:
                break
            batch.append(job)
            total += job.nbytes
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._batch()
                for job in batch:
                    job.state = READING
                self._held += sum(job.nbytes for job in batch)
            if not batch:
                return
            results, error, handle = None, None, self._handles[batch[0].file]()
            try:
                if handle is None:
                    raise SafetensorError("File is closed")
                if batch[0].index is None:
                    got = handle._read_tensors([job.name for job in batch])
                    results = [got[job.name] for job in batch]
                else:
                    results = [handle._slice(batch[0].name)[batch[0].index]]
            except BaseException as exc:   # handed to the caller that takes the tensor
                error = exc
            finally:
                handle = None   # not kept alive by this frame (nor by error's traceback)
            with self._cond:
                for k, job in enumerate(batch):
                    job.state = DONE
                    job.result, job.error = (results[k], None) if results is not None else (None, error)
                    if self._cancelled:
                        job.result = job.error = None
                self._cond.notify_all()


def _part(name: str, shape: Sequence[int], placement: Shard, rank: int, world_size: int) -> tuple:
    """The index of ``rank``'s part of a tensor under ``Shard(dim)``."""
    ndim, dim = len(shape), placement.dim
    if not isinstance(dim, int) or ndim == 0 or not -ndim <= dim < ndim:
        raise ValueError(f"cannot shard tensor {name!r} of shape {list(shape)} along dim {dim}")
    dim %= ndim
    bounds = shard_bounds(shape[dim], world_size)
    return (slice(None),) * dim + (slice(bounds[rank], bounds[rank + 1]),)


def _normalized(index: Any, shape: Sequence[int]) -> Optional[Tuple[Tuple[int, int], ...]]:
    """(start, stop) per dimension of an index made of unit-step slices (None
    for any other index): what two such indexes are compared by."""
    index = index if isinstance(index, tuple) else (index,)
    if len(index) > len(shape) or not all(isinstance(s, slice) and s.step in (None, 1) for s in index):
        return None
    index = index + (slice(None),) * (len(shape) - len(index))
    return tuple(s.indices(n)[:2] for s, n in zip(index, shape))


class _PlannedSlice:
    """get_slice(name) of a tensor planned as a Shard: indexing it with the
    planned part returns the part read (once); any other index, and a second
    one, reads as get_slice does."""

    def __init__(self, prefetch: Prefetch, job: _Job, handle: Any):
        if handle is None:
            raise SafetensorError("File is closed")
        self._prefetch, self._job, self._slice = prefetch, job, handle._slice(job.name)

    def get_shape(self) -> List[int]:
        return self._slice.get_shape()

    def get_dtype(self) -> str:
        return self._slice.get_dtype()

    def __getitem__(self, index: Any) -> Any:
        shape = self._slice.get_shape()
        if _normalized(index, shape) == _normalized(self._job.index, shape):
            with self._prefetch._cond:
                part = self._prefetch._take(self._job)
            if part is not None:
                return part
        return self._slice[index]
