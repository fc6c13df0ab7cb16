"""A sharded checkpoint's index (``model.safetensors.index.json``): the one
reader of its JSON, the one rule for where its shard names lead, and what a
checkpoint source (a directory, an index path or URL, a list of files)
stands for; used by the command line (``safetensors.cli``),
``safe_open`` of a checkpoint (``safetensors.checkpoint``) and
``load_distributed``.

Bad input raises ValueError with the index's path in the message.
"""
import json
import os
from typing import Any, Dict, List, Optional, Tuple, Union

from . import remote


def parse_index(raw: Union[bytes, str], where: str) -> Tuple[Dict[str, str], Any]:
    """(weight_map, metadata) of an index's bytes; ``where`` names it in
    messages. The weight_map must map tensor names to file names; metadata
    is whatever the index holds there (None when absent)."""
    try:
        index = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: cannot read the index: {exc}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{where}: not a safetensors index (expected a \"weight_map\" of tensor name -> file name)")
    return weight_map, index.get("metadata")


def read_index(path: str) -> Tuple[Dict[str, str], Any]:
    """parse_index of a local index file; OSError when it cannot be read."""
    with open(path, "rb") as f:
        return parse_index(f.read(), path)


def shard_path(index_path: str, shard: str) -> str:
    """The file a shard name of a local index stands for. Names come from the
    index, so they are not trusted: the file must really lie inside the
    index's folder (as given, or the folder the index file itself really is
    in: the huggingface_hub cache links the index and every shard into its
    blobs folder). Absolute names, ``..`` escapes and symlinks leading out
    are refused with a ValueError."""
    folder = os.path.dirname(index_path)
    path = os.path.join(folder, shard)
    if not os.path.isabs(shard) and "\0" not in shard:
        real = os.path.realpath(path)
        for home in {os.path.realpath(folder), os.path.dirname(os.path.realpath(index_path))}:
            if real != home and os.path.commonpath([real, home]) == home:
                return path
    raise ValueError(f"{index_path}: shard name {shard!r} leads outside the index's folder: refused")


def shard_url(index_url: str, shard: str) -> str:
    """The URL a shard name of a remote index stands for: next to the index
    (same prefix). Names that could leave it (absolute, ``..``, a scheme, a
    query) are refused with a ValueError, as shard_path refuses them."""
    parts = shard.split("/")
    if shard and not shard.startswith("/") and ".." not in parts and "://" not in shard and not any(
            c in shard for c in "?#\\\0"):
        return f"{index_url.split('?', 1)[0].rsplit('/', 1)[0]}/{shard}"
    raise ValueError(f"{index_url}: shard name {shard!r} leads outside the index's folder: refused")


def read_remote_index(url: str, storage_options: Optional[dict] = None) -> Tuple[Dict[str, str], Any]:
    """parse_index of an index at a URL (read through safetensors.remote)."""
    source = remote.open_source(url, storage_options)
    try:
        data = bytearray(source.size)
        source.read_many([(0, memoryview(data))])
    finally:
        source.close()
    return parse_index(bytes(data), url)


INDEX_SUFFIX = ".safetensors.index.json"


class NotACheckpoint(Exception):
    """A folder with neither an index nor a ``*.safetensors`` file."""


def find_index(folder: str) -> Optional[str]:
    """The index of a local checkpoint folder: model.safetensors.index.json,
    else its only ``*.safetensors.index.json``; None when it has none. Two or
    more others are ambiguous: ValueError."""
    found = sorted(n for n in os.listdir(folder) if n.endswith(INDEX_SUFFIX))
    if "model" + INDEX_SUFFIX in found:
        return os.path.join(folder, "model" + INDEX_SUFFIX)
    if len(found) > 1:
        raise ValueError(f"{folder}: several indexes ({', '.join(found)}); open the one you mean")
    return os.path.join(folder, found[0]) if found else None


def resolve(source: Any, storage_options: Optional[dict] = None
            ) -> Tuple[List[str], Optional[Dict[str, str]], Any, str]:
    """(files, weight_map, index metadata, where) of a checkpoint source: a
    local folder (its index, else every ``*.safetensors`` in it, sorted; else
    NotACheckpoint), an
    index path or URL (``.json``; its files sorted by name, weight_map with
    the files' paths or URLs as values), or a list of paths or URLs (as
    given, no weight_map). ``where`` names the source in messages."""
    if isinstance(source, (list, tuple)):
        files = [remote.local_path(os.fspath(s) if isinstance(s, os.PathLike) else s) for s in source]
        if not files or not all(isinstance(f, str) for f in files):
            raise TypeError("safe_open: a checkpoint's list must name one or more files (paths or URLs)")
        if len(set(files)) != len(files):
            raise ValueError("safe_open: the same file is listed twice")
        return files, None, None, f"the {len(files)} files listed"
    where = remote.local_path(os.fspath(source))
    if not remote.is_remote(where) and os.path.isdir(where):
        index = find_index(where)
        if index is None:
            files = sorted(os.path.join(where, n) for n in os.listdir(where) if n.endswith(".safetensors"))
            if not files:
                raise NotACheckpoint(where)
            return files, None, None, where
        where = index
    if remote.is_remote(where):
        weight_map, metadata = read_remote_index(where, storage_options)
        locate = shard_url
    else:
        weight_map, metadata = read_index(where)
        locate = shard_path
    paths = {n: locate(where, n) for n in sorted(set(weight_map.values()))}
    return list(paths.values()), {k: paths[v] for k, v in weight_map.items()}, metadata, where
