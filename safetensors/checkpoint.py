"""``safe_open`` of a whole checkpoint: a directory, a
``model.safetensors.index.json`` path or URL, or a list of files, presented
as one handle (docs/checkpoints.md). Each file is a ``safe_open`` handle of
its own; this class only routes names to them, so every framework, device,
slicing and message rule is the file handle's.

What is visible: with an index, exactly its ``weight_map`` (a tensor present
in a file but not listed is not visible; one listed for a file that lacks it,
or present in two of the files, is an error at open that names it); without
one, every tensor of every file (a name in two files is an error).
"""
import json
from typing import Any, Dict, List, Optional

from ._safetensors_c import SafetensorError, safe_open
from . import _index
from .prefetch import Prefetch


class Checkpoint:
    """A checkpoint's files as one handle: ``keys``, ``offset_keys``,
    ``metadata``, ``get_tensor``, ``get_slice``, ``get_tensors`` and
    ``prefetch`` as on a file's handle; ``files``: the files, in order."""

    def __init__(self, source: Any, framework: Any, device: Any = "cpu", **options: Any):
        files, weight_map, index_metadata, where = _index.resolve(source, options.get("storage_options"))
        self.files: List[str] = files
        self._handles: List[Any] = []
        self._prefetch: Optional[Prefetch] = None
        self._index_metadata = index_metadata
        try:
            for path in files:
                self._handles.append(safe_open(path, framework, device, **options))
            self._where = self._route(weight_map, where)
        except BaseException:
            self.close()
            raise

    def _route(self, weight_map: Optional[Dict[str, str]], where: str) -> Dict[str, int]:
        """{visible name: position of its file}, checked as the module says."""
        found: Dict[str, List[int]] = {}
        for i, handle in enumerate(self._handles):
            for name in handle.offset_keys():
                found.setdefault(name, []).append(i)
        position = {path: i for i, path in enumerate(self.files)}
        wanted = {n: holders[:1] for n, holders in found.items()} if weight_map is None else {
            n: [position[path]] for n, path in weight_map.items()}
        route = {}
        for name, (i,) in wanted.items():
            holders = found.get(name, [])
            if i not in holders:
                raise SafetensorError(f"{where}: the index names tensor {name!r} in {self.files[i]}, "
                                      "which does not contain it")
            if len(holders) > 1:
                raise SafetensorError(f"tensor {name!r} is in both {self.files[holders[0]]} and "
                                      f"{self.files[holders[1]]}; a checkpoint's names must be unique")
            route[name] = i
        return route

    def _open(self) -> List[Any]:
        """The files' handles; "File is closed" once closed, as a file's handle says."""
        if not self._handles:
            raise SafetensorError("File is closed")
        return self._handles

    def _handle(self, name: Any) -> Any:
        """The handle holding ``name``; for a name that is not a str, the first
        (whose get_tensor/get_slice raise the TypeError)."""
        handles = self._open()
        if not isinstance(name, str):
            return handles[0]
        if name not in self._where:
            raise SafetensorError(f"File does not contain tensor {name}")
        return handles[self._where[name]]

    # -- the file handle's API --

    def keys(self) -> List[str]:
        self._open()
        return sorted(self._where)

    def offset_keys(self) -> List[str]:
        return [n for i, h in enumerate(self._open()) for n in h.offset_keys() if self._where.get(n) == i]

    def metadata(self) -> Optional[Dict[str, str]]:
        """The files' ``__metadata__`` merged in file order (a later file's
        value wins), then the index's ``metadata`` over it, non-string values
        as JSON (``total_size``: ``"1234"``); None when there is none."""
        merged: Dict[str, str] = {}
        for handle in self._open():
            merged.update(handle.metadata() or {})
        if isinstance(self._index_metadata, dict):
            merged.update((k, v if isinstance(v, str) else json.dumps(v)) for k, v in self._index_metadata.items())
        return merged or None

    def get_tensor(self, name: str) -> Any:
        handle = self._handle(name)
        if self._prefetch is not None and isinstance(name, str):
            tensor = self._prefetch.take(name)
            if tensor is not None:
                return tensor
        return handle.get_tensor(name)

    def get_slice(self, name: str) -> Any:
        handle = self._handle(name)
        if self._prefetch is not None and isinstance(name, str):
            planned = self._prefetch.slice(name)
            if planned is not None:
                return planned
        return handle.get_slice(name)

    def get_tensors(self) -> Dict[str, Any]:
        """Every visible tensor, in offset_keys order: each file's as its
        handle's get_tensors gives them (views of a mapped file in the page
        cache; one parallel read of a file that is not), or, for a file only
        part of which is visible, its visible tensors one by one."""
        handles = self._open()
        if self._prefetch is not None:   # what the caller's plan read first
            return {name: self.get_tensor(name) for name in self.offset_keys()}
        out: Dict[str, Any] = {}
        for handle, table in zip(handles, self._tables()):
            if len(table) == len(handle.keys()):
                out.update(handle.get_tensors())
            else:
                out.update((row[0], handle.get_tensor(row[0])) for row in table)
        return out

    def _tables(self) -> List[List[tuple]]:
        """Each file's visible ``_table()`` rows."""
        return [[row for row in h._table() if self._where.get(row[0]) == i] for i, h in enumerate(self._handles)]

    def prefetch(self, plan: Any = None, **options: Any) -> None:
        """As a file handle's prefetch, over every file in order."""
        reader = Prefetch(self._open(), self._tables(), plan, **options)
        old, self._prefetch = self._prefetch, reader
        if old is not None:
            old.close()

    def close(self) -> None:
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.close()
        reader, self._prefetch = self._prefetch, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<safetensors checkpoint of {len(self.files)} files{'' if self._handles else ' (closed)'}>"


def open_checkpoint(source: Any, framework: Any, device: Any = "cpu", **options: Any) -> Any:
    """safe_open of a checkpoint (registered with the C extension); NotImplemented
    for a folder that holds none: safe_open then raises upstream's
    IsADirectoryError("Is a directory: <path>")."""
    try:
        return Checkpoint(source, framework, device, **options)
    except _index.NotACheckpoint:
        return NotImplemented


def prefetch_for_handle(handle: Any, plan: Any = None, **options: Any) -> Prefetch:
    """A file handle's prefetch(plan, **options) (registered with the C extension)."""
    return Prefetch([handle], [handle._table()], plan, **options)
